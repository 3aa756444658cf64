//! Regulation: failures are counted per user and per client IP inside `find_time`; past the
//! limit the user or IP is banned for `ban_time` and its attempts never reach a password check
//! (nor, later, Keycloak, whose brute-force detector would lock the user out of every site).
//! Offline failures also count against the user's offline lockout
//! (`auth.offline.failed_login_attempts`, `failed_login_delay`).
//!
//! [`Regulator`] is the one regulator of every endpoint that takes a password: it reads the
//! bans before any password work and records failures and successes inside the caller's
//! transaction.

use std::net::IpAddr;

use crate::config::{Config, RegulationConfig};
use crate::domain::UserKey;
use crate::store::regulation::Strikes;
use crate::store::{ReadTx, WriteTx};

/// The regulation counters one attempt touches.
#[derive(Debug, Clone)]
pub struct Subjects {
    user: String,
    ip: Option<String>,
    offline: String,
}

impl Subjects {
    pub fn new(key: &UserKey, ip: Option<IpAddr>) -> Self {
        Subjects {
            user: user_subject(key),
            ip: ip.map(ip_subject),
            offline: format!("off:{}", key.store_key()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Regulator {
    cfg: RegulationConfig,
    offline_cfg: RegulationConfig,
    offline_attempts: u32,
}

impl Regulator {
    pub fn from_config(config: &Config) -> Self {
        let cfg = config.regulation.clone();
        let off = &config.auth.offline;
        Regulator {
            offline_cfg: RegulationConfig {
                ban_time: off.failed_login_delay,
                ..cfg.clone()
            },
            offline_attempts: off.failed_login_attempts,
            cfg,
        }
    }

    /// Seconds until the longest running ban on the user or the client IP ends.
    pub fn banned(&self, r: &ReadTx, s: &Subjects, now: u64) -> crate::store::Result<Option<u64>> {
        let mut banned = None;
        for subject in std::iter::once(&s.user).chain(s.ip.as_ref()) {
            banned = banned.max(banned_for(r.strikes(subject)?.as_ref(), now));
        }
        Ok(banned)
    }

    /// Seconds until the user's offline lockout ends.
    pub fn offline_locked(
        &self,
        r: &ReadTx,
        s: &Subjects,
        now: u64,
    ) -> crate::store::Result<Option<u64>> {
        Ok(banned_for(r.strikes(&s.offline)?.as_ref(), now))
    }

    /// Counts one failure against the user and the IP, and against the offline lockout when
    /// `offline`; returns the longest ban that started or is running, in seconds.
    pub fn record_failure(
        &self,
        w: &mut WriteTx,
        s: &Subjects,
        offline: bool,
        now: u64,
    ) -> crate::store::Result<Option<u64>> {
        let mut subjects = vec![(s.user.clone(), self.cfg.max_retries, self.cfg.clone())];
        if let Some(ip) = &s.ip {
            subjects.push((ip.clone(), self.cfg.max_retries_per_ip, self.cfg.clone()));
        }
        if offline {
            subjects.push((
                s.offline.clone(),
                self.offline_attempts,
                self.offline_cfg.clone(),
            ));
        }
        record_failures(w, &subjects, now)
    }

    /// A successful login: the user's counters (online and offline) start over.
    pub fn record_success(&self, w: &mut WriteTx, s: &Subjects) -> crate::store::Result<()> {
        w.clear_strikes(&s.user)?;
        w.clear_strikes(&s.offline)
    }

    /// An operator's reset or removal, or a password change: the user's ban ends.
    pub fn clear_user(&self, w: &mut WriteTx, key: &UserKey) -> crate::store::Result<()> {
        w.clear_strikes(&user_subject(key))
    }
}

fn user_subject(k: &UserKey) -> String {
    format!("u:{}", k.store_key())
}

fn ip_subject(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

/// Seconds until the ban on `s` ends, when it is banned at `now`.
pub fn banned_for(s: Option<&Strikes>, now: u64) -> Option<u64> {
    s.filter(|s| s.banned_until > now)
        .map(|s| s.banned_until - now)
}

/// The counter after one more failure at `now`, with `limit` failures allowed per window.
pub fn after_failure(s: Option<Strikes>, now: u64, limit: u32, cfg: &RegulationConfig) -> Strikes {
    let mut s = s.unwrap_or_default();
    if s.failures == 0 || now >= s.window_start.saturating_add(cfg.find_time.as_secs()) {
        s.failures = 0;
        s.window_start = now;
    }
    s.failures = s.failures.saturating_add(1);
    if s.failures >= limit {
        s.banned_until = now.saturating_add(cfg.ban_time.as_secs());
        s.failures = 0;
    }
    s
}

/// Counts one failure against each `(subject, limit, config)` inside the caller's transaction;
/// returns the longest ban that started or is running, in seconds.
fn record_failures(
    w: &mut crate::store::WriteTx,
    subjects: &[(String, u32, RegulationConfig)],
    now: u64,
) -> crate::store::Result<Option<u64>> {
    let mut retry = None;
    for (subject, limit, cfg) in subjects {
        let s = after_failure(w.strikes(subject)?, now, *limit, cfg);
        retry = retry.max(banned_for(Some(&s), now));
        w.put_strikes(subject, &s)?;
    }
    Ok(retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg() -> RegulationConfig {
        RegulationConfig {
            max_retries: 3,
            max_retries_per_ip: 10,
            find_time: Dur::secs(60),
            ban_time: Dur::secs(300),
        }
    }

    #[test]
    fn bans_at_limit_within_window() {
        let c = cfg();
        let mut s = None;
        for t in [100, 110] {
            s = Some(after_failure(s, t, 3, &c));
            assert_eq!(banned_for(s.as_ref(), t), None);
        }
        s = Some(after_failure(s, 120, 3, &c));
        assert_eq!(banned_for(s.as_ref(), 120), Some(300));
        assert_eq!(banned_for(s.as_ref(), 419), Some(1));
        assert_eq!(banned_for(s.as_ref(), 420), None);
    }

    #[test]
    fn window_resets() {
        let c = cfg();
        let s = after_failure(None, 100, 3, &c);
        let s = after_failure(Some(s), 130, 3, &c);
        let s = after_failure(Some(s), 200, 3, &c); // window of 60 s passed: starts over
        assert_eq!((s.failures, s.window_start, s.banned_until), (1, 200, 0));
    }
}
