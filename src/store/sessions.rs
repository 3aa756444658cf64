//! The `sessions` table (keyed by the SHA-256 of the session id; the id itself is never
//! stored) and the `user_sessions` index used to revoke every session of a user.

use redb::{MultimapTableDefinition, ReadableMultimapTable, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{ReadTx, Result, SESSIONS, USER_SESSIONS, WriteTx, decode, encode};
use crate::crypto::SessionDigest;
use crate::domain::{AuthMode, Tenant, UserKey, Username};

/// Why a session stopped before its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    Logout,
    PasswordChanged,
    UserDisabled,
    UserRemoved,
    /// Keycloak refused the session's refresh (central logout, disable).
    KeycloakRejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub tenant: Tenant,
    pub username: Username,
    pub auth_mode: AuthMode,
    pub created_at: u64,
    /// Last use as of the latest flush; the in-memory activity map may hold a later one.
    pub last_seen: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    #[serde(default)]
    pub revoked_reason: Option<RevokeReason>,
    /// The user's Keycloak tokens for this session, sealed (design rule 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak: Option<SealedTokens>,
}

/// Keycloak tokens of a session, sealed with the appliance key (the hex is the AEAD output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedTokens {
    pub sealed_hex: String,
    pub access_expires_at: u64,
    pub refresh_expires_at: u64,
    /// When the tokens were obtained or last refreshed.
    pub renewed_at: u64,
}

impl SessionRecord {
    pub fn user_key(&self) -> UserKey {
        UserKey::new(self.tenant.clone(), self.username.clone())
    }

    /// When the session ends, whichever comes first: absolute TTL or idle timeout.
    pub fn ends_at(&self, last_seen: u64, idle: u64) -> u64 {
        self.expires_at.min(last_seen.saturating_add(idle))
    }
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionCounts {
    pub active: u64,
    pub keycloak: u64,
    pub cached: u64,
    pub local: u64,
    /// Active sessions that end within the "soon" window given to [`ReadTx::session_counts`].
    pub expiring_soon: u64,
    /// Of those, the ones whose user holds Keycloak tokens (cached or keycloak sessions).
    pub cached_expiring_soon: u64,
}

fn hex_key(d: &[u8]) -> String {
    d.iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + "…"
}

const INDEX: MultimapTableDefinition<&str, &[u8]> = USER_SESSIONS;

impl ReadTx {
    pub fn session(&self, digest: &SessionDigest) -> Result<Option<SessionRecord>> {
        let t = self.tx.open_table(SESSIONS)?;
        match t.get(digest.as_slice())? {
            Some(v) => Ok(Some(decode("sessions", hex_key(digest), v.value())?)),
            None => Ok(None),
        }
    }

    /// Live sessions that hold Keycloak tokens (for the refresher).
    pub fn sessions_with_tokens(&self) -> Result<Vec<(SessionDigest, SessionRecord)>> {
        let t = self.tx.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let Ok(d) = SessionDigest::try_from(k.value()) else {
                continue;
            };
            let s: SessionRecord = decode("sessions", hex_key(k.value()), v.value())?;
            if s.revoked_at.is_none() && s.keycloak.is_some() {
                out.push((d, s));
            }
        }
        Ok(out)
    }

    /// Sessions that are neither revoked nor past their end at `now`.
    pub fn session_counts(&self, now: u64, idle: u64, soon: u64) -> Result<SessionCounts> {
        let t = self.tx.open_table(SESSIONS)?;
        let mut c = SessionCounts::default();
        for row in t.iter()? {
            let (k, v) = row?;
            let s: SessionRecord = decode("sessions", hex_key(k.value()), v.value())?;
            let ends = s.ends_at(s.last_seen, idle);
            if s.revoked_at.is_some() || ends <= now {
                continue;
            }
            c.active += 1;
            match s.auth_mode {
                AuthMode::Keycloak => c.keycloak += 1,
                AuthMode::Cached => c.cached += 1,
                AuthMode::Local => c.local += 1,
            }
            if ends <= now.saturating_add(soon) {
                c.expiring_soon += 1;
                if s.auth_mode != AuthMode::Local {
                    c.cached_expiring_soon += 1;
                }
            }
        }
        Ok(c)
    }
}

impl WriteTx {
    pub fn session(&mut self, digest: &SessionDigest) -> Result<Option<SessionRecord>> {
        let t = self.tx.open_table(SESSIONS)?;
        match t.get(digest.as_slice())? {
            Some(v) => Ok(Some(decode("sessions", hex_key(digest), v.value())?)),
            None => Ok(None),
        }
    }

    pub fn insert_session(&mut self, digest: &SessionDigest, s: &SessionRecord) -> Result<()> {
        self.tx
            .open_table(SESSIONS)?
            .insert(digest.as_slice(), encode(s).as_slice())?;
        let uk = s.user_key().store_key();
        self.tx
            .open_multimap_table(INDEX)?
            .insert(uk.as_str(), digest.as_slice())?;
        Ok(())
    }

    /// Marks one session revoked; returns it as it was, or `None` when unknown.
    pub fn revoke_session(
        &mut self,
        digest: &SessionDigest,
        reason: RevokeReason,
        now: u64,
    ) -> Result<Option<SessionRecord>> {
        let mut t = self.tx.open_table(SESSIONS)?;
        let Some(mut s) = (match t.get(digest.as_slice())? {
            Some(v) => Some(decode::<SessionRecord>(
                "sessions",
                hex_key(digest),
                v.value(),
            )?),
            None => None,
        }) else {
            return Ok(None);
        };
        let before = s.clone();
        if s.revoked_at.is_none() {
            s.revoked_at = Some(now);
            s.revoked_reason = Some(reason);
            t.insert(digest.as_slice(), encode(&s).as_slice())?;
        }
        Ok(Some(before))
    }

    /// Revokes every live session of `user` except `keep`; returns how many.
    pub fn revoke_user_sessions(
        &mut self,
        user: &UserKey,
        reason: RevokeReason,
        now: u64,
        keep: Option<&SessionDigest>,
    ) -> Result<u64> {
        let digests = self.user_session_digests(user)?;
        let mut n = 0;
        for d in digests {
            if keep.is_some_and(|k| k.as_slice() == d.as_slice()) {
                continue;
            }
            if let Some(s) = self.revoke_session(&d, reason, now)?
                && s.revoked_at.is_none()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes every session of `user` and its index entries (user removal).
    pub fn delete_user_sessions(&mut self, user: &UserKey) -> Result<u64> {
        let digests = self.user_session_digests(user)?;
        let mut t = self.tx.open_table(SESSIONS)?;
        for d in &digests {
            t.remove(d.as_slice())?;
        }
        drop(t);
        self.tx
            .open_multimap_table(INDEX)?
            .remove_all(user.store_key().as_str())?;
        Ok(digests.len() as u64)
    }

    fn user_session_digests(&mut self, user: &UserKey) -> Result<Vec<SessionDigest>> {
        let idx = self.tx.open_multimap_table(INDEX)?;
        let mut out = Vec::new();
        for v in idx.get(user.store_key().as_str())? {
            if let Ok(d) = SessionDigest::try_from(v?.value()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Writes batched last-seen times (rule 8: one commit for many requests).
    pub fn touch_sessions(&mut self, seen: &[(SessionDigest, u64)]) -> Result<()> {
        let mut t = self.tx.open_table(SESSIONS)?;
        for (d, at) in seen {
            let Some(mut s) = (match t.get(d.as_slice())? {
                Some(v) => Some(decode::<SessionRecord>("sessions", hex_key(d), v.value())?),
                None => None,
            }) else {
                continue;
            };
            if *at > s.last_seen {
                s.last_seen = *at;
                t.insert(d.as_slice(), encode(&s).as_slice())?;
            }
        }
        Ok(())
    }

    /// Deletes sessions that ended (expired, idled out or revoked) more than `keep` seconds
    /// before `now`. Ended sessions are kept that long so validation can say why they ended.
    pub fn purge_sessions(&mut self, now: u64, idle: u64, keep: u64) -> Result<u64> {
        let cutoff = now.saturating_sub(keep);
        let mut dead: Vec<(Vec<u8>, String)> = Vec::new();
        {
            let t = self.tx.open_table(SESSIONS)?;
            for row in t.iter()? {
                let (k, v) = row?;
                let ended = match decode::<SessionRecord>("sessions", hex_key(k.value()), v.value())
                {
                    Ok(s) => {
                        s.revoked_at
                            .unwrap_or(u64::MAX)
                            .min(s.ends_at(s.last_seen, idle))
                            < cutoff
                    }
                    // An unreadable session can never validate: drop it rather than fail cleanup.
                    Err(e) => {
                        log::warn!("{e}; deleting it");
                        true
                    }
                };
                if ended {
                    let user = decode::<SessionRecord>("sessions", "", v.value())
                        .map(|s| s.user_key().store_key())
                        .unwrap_or_default();
                    dead.push((k.value().to_vec(), user));
                }
            }
        }
        let mut t = self.tx.open_table(SESSIONS)?;
        for (k, _) in &dead {
            t.remove(k.as_slice())?;
        }
        drop(t);
        let mut idx = self.tx.open_multimap_table(INDEX)?;
        for (k, user) in &dead {
            idx.remove(user.as_str(), k.as_slice())?;
        }
        Ok(dead.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn rec(name: &str, expires_at: u64) -> SessionRecord {
        SessionRecord {
            tenant: Tenant::default_tenant(),
            username: Username::parse(name).unwrap(),
            auth_mode: AuthMode::Local,
            created_at: 100,
            last_seen: 100,
            expires_at,
            revoked_at: None,
            revoked_reason: None,
            keycloak: None,
        }
    }

    #[test]
    fn revoke_all_but_one() {
        let (_d, s) = temp_store();
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        s.write(|w| {
            w.insert_session(&a, &rec("alice", 1000))?;
            w.insert_session(&b, &rec("alice", 1000))?;
            w.insert_session(&c, &rec("bob", 1000))
        })
        .unwrap();
        let alice = rec("alice", 0).user_key();
        let n = s
            .write(|w| w.revoke_user_sessions(&alice, RevokeReason::PasswordChanged, 200, Some(&a)))
            .unwrap();
        assert_eq!(n, 1);
        assert!(
            s.read(|r| r.session(&a))
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        let revoked = s.read(|r| r.session(&b)).unwrap().unwrap();
        assert_eq!(revoked.revoked_reason, Some(RevokeReason::PasswordChanged));
        assert!(
            s.read(|r| r.session(&c))
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
    }

    #[test]
    fn counts_and_purge() {
        let (_d, s) = temp_store();
        let mut cached = rec("carol", 10_000);
        cached.auth_mode = AuthMode::Cached;
        s.write(|w| {
            w.insert_session(&[1; 32], &rec("alice", 10_000))?;
            w.insert_session(&[2; 32], &cached)?;
            w.insert_session(&[3; 32], &rec("bob", 150))
        })
        .unwrap();
        // idle 1000: alice and carol end at 1100; bob at 150.
        let c = s.read(|r| r.session_counts(200, 1000, 950)).unwrap();
        assert_eq!((c.active, c.local, c.cached, c.expiring_soon), (2, 1, 1, 2));
        s.write(|w| w.touch_sessions(&[([1; 32], 5000)])).unwrap();
        assert_eq!(
            s.read(|r| r.session(&[1; 32])).unwrap().unwrap().last_seen,
            5000
        );
        // At 10_000 with keep 100: bob ended at 150, carol at 1100 -> purged; alice ends 6000.
        assert_eq!(s.write(|w| w.purge_sessions(7000, 1000, 100)).unwrap(), 3);
        assert!(s.read(|r| r.session(&[3; 32])).unwrap().is_none());
        assert_eq!(s.write(|w| w.purge_sessions(7000, 1000, 100)).unwrap(), 0);
    }

    #[test]
    fn delete_user_sessions_clears_index() {
        let (_d, s) = temp_store();
        s.write(|w| w.insert_session(&[9; 32], &rec("dave", 1000)))
            .unwrap();
        let dave = rec("dave", 0).user_key();
        assert_eq!(s.write(|w| w.delete_user_sessions(&dave)).unwrap(), 1);
        assert!(s.read(|r| r.session(&[9; 32])).unwrap().is_none());
        assert_eq!(
            s.write(|w| w.revoke_user_sessions(&dave, RevokeReason::Logout, 1, None))
                .unwrap(),
            0
        );
    }
}
