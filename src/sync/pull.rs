//! The pull of central changes: users disabled or deleted in Keycloak are disabled at the site
//! and their sessions end. `keycloak.sync.pull` chooses one lookup per known user ("known") or
//! a paged listing of the realm ("realm").
//!
//! Roles and groups are not pulled (design rule 9): what the site stores about a user has the
//! shape and meaning of that user's token claims, and only a token has them. The admin API shows
//! direct role mappings, not the effective ones a token carries through groups and composites,
//! and group paths, not what the realm's group mapper renders; the client scopes and mappers
//! that shape a token are the realm's business. So roles and groups come from each online login
//! and each token refresh, and the pull costs one call per user (or one per page), on the two
//! realm-management roles the README lists.
//!
//! The pull is paced (`keycloak.sync.pull_rate` calls a second, jittered), so a thousand sites
//! coming back from one WAN outage do not meet a recovering Keycloak all at once; the sync
//! worker also runs it only on its own schedule, never on the wake-up that follows a recovery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::{SyncError, Syncer};
use crate::domain::{Source, Tenant};
use crate::keycloak::admin::KcUser;
use crate::store::StoreError;
use crate::store::sessions::RevokeReason;
use crate::upstream::{Unavailable, UpstreamError};

/// What a pull did: users looked up, users disabled here.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pulled {
    pub looked_up: u64,
    pub disabled: u64,
}

/// Why a pull stopped: Keycloak stopped answering (the cycle reports it and ends), or the
/// site itself failed (a store error: never reported as a Keycloak outage).
#[derive(Debug)]
pub(super) enum Stop {
    Unavailable(Unavailable),
    Failed(SyncError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e.into())
    }
}

/// The pause before the next admin call of a pull: `1 / rate` seconds, jittered to between half
/// and one and a half times that, so sites that came back together drift apart.
pub(super) fn pace(rate: f64, jitter_unit: f64) -> Duration {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    Duration::from_secs_f64((0.5 + jitter_unit.clamp(0.0, 1.0)) / rate)
}

impl Syncer {
    /// Pulls central changes for the enabled Keycloak users this site knows.
    pub(super) async fn pull(&self) -> Result<Pulled, Stop> {
        let users: Vec<_> = self
            .store
            .read(|r| r.users(None))?
            .into_iter()
            .filter(|u| u.source == Source::Keycloak && u.enabled)
            .collect();
        let rate = self.config.pull_rate;
        let mut report = Pulled::default();
        let mut first_call = true;
        let mut paced = || {
            let wait = if first_call {
                Duration::ZERO
            } else {
                pace(rate, crate::crypto::random_unit())
            };
            first_call = false;
            tokio::time::sleep(wait)
        };
        // `pull = "realm"`: one paged listing per tenant's realm instead of one lookup per user.
        let mut listings: HashMap<Tenant, Arc<HashMap<String, KcUser>>> = HashMap::new();
        if self.config.pull == crate::config::PullScope::Realm {
            let tenants: HashSet<Tenant> = users.iter().map(|u| u.tenant.clone()).collect();
            for tenant in tenants {
                paced().await;
                let page = self.config.batch.max(1);
                let listed = self
                    .upstream
                    .admin("sync_list", &tenant, move |admin| admin.all_users(page))
                    .await;
                match listed {
                    Ok(all) => {
                        let map = all
                            .into_iter()
                            .map(|u| (u.username.to_lowercase(), u))
                            .collect();
                        listings.insert(tenant, Arc::new(map));
                    }
                    Err(UpstreamError::Rejected(r)) => {
                        log::warn!("sync: listing the users of {tenant}'s realm was refused: {r}")
                    }
                    Err(UpstreamError::Unavailable(u)) => return Err(Stop::Unavailable(u)),
                }
            }
        }
        for u in users {
            let key = u.key();
            let central = match listings.get(&u.tenant) {
                Some(map) => Ok(map.get(&u.username.as_str().to_lowercase()).cloned()),
                None => {
                    paced().await;
                    let username = u.username.to_string();
                    self.upstream
                        .admin("sync_pull", &u.tenant, move |admin| {
                            admin.find_user(&username)
                        })
                        .await
                }
            };
            match central {
                Ok(found) if found.as_ref().is_some_and(|f| f.enabled) => report.looked_up += 1,
                Ok(_) => {
                    self.disable(&key).await?;
                    report.looked_up += 1;
                    report.disabled += 1;
                }
                Err(UpstreamError::Rejected(r)) => {
                    log::warn!("sync: pulling {key} was refused: {r}")
                }
                Err(UpstreamError::Unavailable(u)) => return Err(Stop::Unavailable(u)),
            }
        }
        Ok(report)
    }

    /// A user disabled or gone centrally: disabled here, and every session ends.
    async fn disable(&self, key: &crate::domain::UserKey) -> Result<(), StoreError> {
        let (k, now) = (key.clone(), self.clock.now());
        self.store
            .write_blocking(move |w| {
                if let Some(mut u) = w.user(&k)? {
                    u.enabled = false;
                    u.updated_at = now;
                    w.put_user(&u)?;
                }
                w.revoke_user_sessions(&k, RevokeReason::UserDisabled, now, None)
                    .map(|_| ())
            })
            .await?;
        log::info!("sync: {key} is disabled or gone in Keycloak; disabled here and sessions ended");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_is_jittered_around_the_rate() {
        assert_eq!(pace(2.0, 0.5), Duration::from_millis(500));
        assert_eq!(pace(2.0, 0.0), Duration::from_millis(250));
        assert_eq!(pace(2.0, 1.0), Duration::from_millis(750));
        assert_eq!(pace(0.0, 0.5), Duration::from_secs(1), "a bad rate is 1/s");
        assert_eq!(pace(f64::NAN, 0.5), Duration::from_secs(1));
    }
}
