//! The `users` table: one record per (tenant, username).

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{ReadTx, Result, USERS, WriteTx, decode, encode};
use crate::domain::{Source, Tenant, UserKey, Username};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub tenant: Tenant,
    pub username: Username,
    pub source: Source,
    /// argon2id PHC string; `None` until the user has logged in once (Keycloak users).
    pub password_hash: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Every client role of the user's last token, as `client:role` (access rules).
    #[serde(default)]
    pub client_roles: Vec<String>,
    /// Display name and email from the user's last token (identity headers).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub enabled: bool,
    pub created_at: u64,
    pub updated_at: u64,
    /// Last successful online (Keycloak) verification: bounds offline logins.
    #[serde(default)]
    pub last_online_auth: Option<u64>,
    /// When Keycloak tokens were last obtained or refreshed for this user (auth_mode `cached`).
    #[serde(default)]
    pub tokens_at: Option<u64>,
}

impl UserRecord {
    pub fn key(&self) -> UserKey {
        UserKey::new(self.tenant.clone(), self.username.clone())
    }
}

fn get(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &UserKey,
) -> Result<Option<UserRecord>> {
    let k = key.store_key();
    match t.get(k.as_str())? {
        Some(v) => Ok(Some(decode("users", &k, v.value())?)),
        None => Ok(None),
    }
}

fn list(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: Option<&Tenant>,
) -> Result<Vec<UserRecord>> {
    let mut out = Vec::new();
    let prefix = tenant.map(|t| format!("{t}/"));
    for row in t.iter()? {
        let (k, v) = row?;
        if prefix.as_deref().is_some_and(|p| !k.value().starts_with(p)) {
            continue;
        }
        out.push(decode("users", k.value(), v.value())?);
    }
    Ok(out)
}

impl ReadTx {
    pub fn user(&self, key: &UserKey) -> Result<Option<UserRecord>> {
        get(&self.tx.open_table(USERS)?, key)
    }

    pub fn users(&self, tenant: Option<&Tenant>) -> Result<Vec<UserRecord>> {
        list(&self.tx.open_table(USERS)?, tenant)
    }

    pub fn user_count(&self) -> Result<u64> {
        Ok(self.tx.open_table(USERS)?.len()?)
    }
}

impl WriteTx {
    pub fn user(&mut self, key: &UserKey) -> Result<Option<UserRecord>> {
        get(&self.tx.open_table(USERS)?, key)
    }

    pub fn put_user(&mut self, user: &UserRecord) -> Result<()> {
        let k = user.key().store_key();
        self.tx
            .open_table(USERS)?
            .insert(k.as_str(), encode(user).as_slice())?;
        Ok(())
    }

    /// Removes the user; `false` when there was none.
    pub fn remove_user(&mut self, key: &UserKey) -> Result<bool> {
        let k = key.store_key();
        Ok(self.tx.open_table(USERS)?.remove(k.as_str())?.is_some())
    }
}

#[cfg(test)]
pub(crate) fn sample(name: &str) -> UserRecord {
    UserRecord {
        tenant: Tenant::default_tenant(),
        username: Username::parse(name).unwrap(),
        source: Source::Local,
        password_hash: Some("$argon2id$x".into()),
        roles: vec!["staff".into()],
        groups: vec![],
        client_roles: Vec::new(),
        name: None,
        email: None,
        enabled: true,
        created_at: 1,
        updated_at: 1,
        last_online_auth: None,
        tokens_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[test]
    fn put_get_list_remove() {
        let (_d, s) = temp_store();
        let alice = sample("alice");
        let mut other = sample("bob");
        other.tenant = Tenant::parse("clinic").unwrap();
        s.write(|w| {
            w.put_user(&alice)?;
            w.put_user(&other)
        })
        .unwrap();
        assert_eq!(
            s.read(|r| r.user(&alice.key())).unwrap(),
            Some(alice.clone())
        );
        assert_eq!(s.read(|r| r.users(None)).unwrap().len(), 2);
        let clinic = Tenant::parse("clinic").unwrap();
        assert_eq!(s.read(|r| r.users(Some(&clinic))).unwrap(), vec![other]);
        assert!(s.write(|w| w.remove_user(&alice.key())).unwrap());
        assert!(!s.write(|w| w.remove_user(&alice.key())).unwrap());
    }

    #[test]
    fn failed_closure_writes_nothing() {
        let (_d, s) = temp_store();
        let r: Result<()> = s.write(|w| {
            w.put_user(&sample("carol"))?;
            Err(crate::store::StoreError::Db("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(s.read(|r| r.user_count()).unwrap(), 0);
    }
}
