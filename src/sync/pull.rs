//! The pull of central changes: users disabled or deleted in Keycloak are disabled at the site
//! and their sessions end; roles and groups are refreshed. `keycloak.sync.pull` chooses one
//! lookup per known user ("known") or a paged listing of the realm ("realm").

use std::collections::HashSet;
use std::sync::Arc;

use crate::app::App;
use crate::domain::Source;
use crate::keycloak::admin::Admin;
use crate::keycloak::outcome::{Outcome, Unavailable, UnavailableKind};
use crate::store::sessions::RevokeReason;

/// Pulls central changes for the Keycloak users this site knows: a user deleted or disabled
/// centrally is disabled here and their sessions end; roles and groups are refreshed.
pub(super) async fn pull(
    app: &Arc<App>,
    kc: &Arc<crate::keycloak::Keycloak>,
) -> Result<(u64, u64), Unavailable> {
    let users = app
        .store
        .read(|r| r.users(None))
        .map_err(|e| Unavailable::new(UnavailableKind::Garbage, e.to_string()))?;
    let (mut pulled, mut disabled) = (0, 0);
    let users: Vec<_> = users
        .into_iter()
        .filter(|u| u.source == Source::Keycloak && u.enabled)
        .collect();
    // `pull = "realm"`: one paged listing per tenant's realm instead of one lookup per user.
    let mut listings: std::collections::HashMap<
        String,
        Arc<std::collections::HashMap<String, crate::keycloak::admin::KcUser>>,
    > = std::collections::HashMap::new();
    if app.config.keycloak.sync.pull == crate::config::PullScope::Realm {
        let tenants: HashSet<crate::domain::Tenant> =
            users.iter().map(|u| u.tenant.clone()).collect();
        for tenant in tenants {
            let (k, t) = (kc.clone(), tenant.clone());
            let page = app.config.keycloak.sync.batch.max(1);
            let listed = kc
                .call(&app.metrics, "sync_list", move || {
                    let tier = k.tier(&t);
                    Admin::new(&tier, &k.admin_tokens).all_users(page)
                })
                .await;
            match listed {
                Outcome::Ok(all) => {
                    let map = all
                        .into_iter()
                        .map(|u| (u.username.to_lowercase(), u))
                        .collect();
                    listings.insert(tenant.to_string(), Arc::new(map));
                }
                Outcome::Rejected(r) => {
                    log::warn!("sync: listing the users of {tenant}'s realm was refused: {r}")
                }
                Outcome::Unavailable(u) => return Err(u),
            }
        }
    }
    for u in users {
        let key = u.key();
        let (k, username, tenant) = (kc.clone(), u.username.to_string(), u.tenant.clone());
        let listing = listings.get(tenant.as_str()).cloned();
        let central = kc
            .call(&app.metrics, "sync_pull", move || {
                let tier = k.tier(&tenant);
                let admin = Admin::new(&tier, &k.admin_tokens);
                let found = match &listing {
                    Some(map) => map.get(&username).cloned(),
                    None => match admin.find_user(&username) {
                        Outcome::Ok(f) => f,
                        Outcome::Rejected(r) => return Outcome::Rejected(r),
                        Outcome::Unavailable(u) => return Outcome::Unavailable(u),
                    },
                };
                let Some(found) = found.filter(|f| f.enabled) else {
                    return Outcome::Ok(None);
                };
                let roles = match admin.roles(&found.id) {
                    Outcome::Ok(r) => r,
                    Outcome::Rejected(r) => return Outcome::Rejected(r),
                    Outcome::Unavailable(u) => return Outcome::Unavailable(u),
                };
                match admin.user_groups(&found.id) {
                    Outcome::Ok(groups) => Outcome::Ok(Some((roles, groups))),
                    Outcome::Rejected(r) => Outcome::Rejected(r),
                    Outcome::Unavailable(u) => Outcome::Unavailable(u),
                }
            })
            .await;
        let now = app.clock.now();
        match central {
            Outcome::Ok(None) => {
                let k = key.clone();
                crate::auth::write(&app.store, move |w| {
                    if let Some(mut u) = w.user(&k)? {
                        u.enabled = false;
                        u.updated_at = now;
                        w.put_user(&u)?;
                    }
                    w.revoke_user_sessions(&k, RevokeReason::UserDisabled, now, None)
                        .map(|_| ())
                })
                .await
                .map_err(|e| Unavailable::new(UnavailableKind::Garbage, e.to_string()))?;
                log::info!(
                    "sync: {key} is disabled or gone in Keycloak; disabled here and sessions ended"
                );
                disabled += 1;
            }
            Outcome::Ok(Some((roles, groups))) => {
                let k = key.clone();
                crate::auth::write(&app.store, move |w| {
                    if let Some(mut u) = w.user(&k)?
                        && (u.roles != roles || u.groups != groups)
                    {
                        u.roles = roles;
                        u.groups = groups;
                        u.updated_at = now;
                        w.put_user(&u)?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| Unavailable::new(UnavailableKind::Garbage, e.to_string()))?;
                pulled += 1;
            }
            Outcome::Rejected(r) => log::warn!("sync: pulling {key} was refused: {r}"),
            Outcome::Unavailable(u) => return Err(u),
        }
    }
    Ok((pulled, disabled))
}
