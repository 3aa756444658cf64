//! The assembled appliance: config, store, hasher, clock, metrics and the activity map,
//! opened once and shared by the HTTP server, the admin socket and the maintenance task.

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::session::Activity;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::{Hasher, SEAL_KEY_FILE, Sealer};
use crate::error::AppError;
use crate::keycloak::Keycloak;
use crate::metrics::Metrics;
use crate::store::backup::{SnapshotInfo, key_id_hex, list_snapshots};
use crate::store::{DB_FILE, Store, StoreError};

#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub hasher: Hasher,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    pub activity: Arc<Activity>,
    /// The Keycloak tier; `None` when no Keycloak is configured (local users only).
    pub keycloak: Option<Arc<Keycloak>>,
    pub alert_log: crate::status::AlertLog,
    /// Set when a proxy on this box is not named in `server.trusted_proxies` (an alert).
    pub local_proxy: crate::http::extract::LocalProxyHint,
    /// Wakes the sync worker (Keycloak came back, or an operator asked).
    pub sync_wakeup: tokio::sync::Notify,
    /// Seals Keycloak tokens and queued passwords at rest (used by the Keycloak tier).
    pub sealer: Sealer,
    pub started_at: u64,
    /// The newest good snapshot and the last snapshot failure, for status.
    pub snapshots: std::sync::Mutex<SnapshotState>,
}

#[derive(Debug, Clone, Default)]
pub struct SnapshotState {
    pub last_good: Option<SnapshotInfo>,
    pub kept: usize,
    /// When the last attempt failed, and why (cleared by the next good one).
    pub last_error: Option<(u64, String)>,
}

impl App {
    /// Opens the data dir: the database and its sealing key. Both are made only on the first
    /// start, when the data dir holds neither; any other missing, empty or mismatched file
    /// is refused with the file named and the restore command.
    pub fn open(config: Config) -> Result<Arc<App>, AppError> {
        crate::keycloak::preflight(&config, &config.origin)?;
        let (store, sealer) = open_data_dir(&config)?;
        Self::assemble(config, store, sealer)
    }

    fn assemble(config: Config, store: Store, sealer: Sealer) -> Result<Arc<App>, AppError> {
        let snapshots = {
            let all = list_snapshots(&config.backup.snapshot_dir(&config.server.data_dir));
            SnapshotState {
                kept: all.len(),
                last_good: all.last().cloned(),
                last_error: None,
            }
        };
        let clock = Clock::with_floor(store.read(|r| r.clock_floor())?);
        if let Some(back) = clock.jump_back_at_start() {
            log::warn!(
                "the system clock is {} behind the latest time this store saw; the appliance's time counts on from the stored time until NTP or Keycloak gives a later one (check NTP / RTC)",
                humantime::format_duration(back)
            );
        }
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let hasher = Hasher::new(&config.argon2)
            .map_err(|e| {
                AppError::Config(crate::config::ConfigError {
                    file: "argon2".into(),
                    key: Some("argon2".into()),
                    message: e.to_string(),
                })
            })?
            .with_wait_observer(Arc::new(move |d| m.argon2_wait(d)));
        let keycloak = Keycloak::from_config(&config, &store, &config.origin)?.map(Arc::new);
        let started_at = clock.now();
        Ok(Arc::new(App {
            config: Arc::new(config),
            store: Arc::new(store),
            hasher,
            clock: Arc::new(clock),
            metrics,
            activity: Arc::new(Activity::default()),
            keycloak,
            alert_log: Default::default(),
            local_proxy: Default::default(),
            sync_wakeup: tokio::sync::Notify::new(),
            sealer,
            started_at,
            snapshots: std::sync::Mutex::new(snapshots),
        }))
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.config.server.data_dir
    }
}

/// The restore command for messages: names the newest snapshot when there is one.
pub fn restore_hint(config: &Config) -> String {
    let dir = config.backup.snapshot_dir(&config.server.data_dir);
    match list_snapshots(&dir).last() {
        Some(s) => format!(
            "`edgeauth db restore {}` (the newest snapshot)",
            s.file.display()
        ),
        None => format!(
            "`edgeauth db restore FILE` with a backup (no snapshot in {})",
            dir.display()
        ),
    }
}

/// See [`App::open`]. "New" means: neither `edgeauth.redb` nor `seal.key` exists.
fn open_data_dir(config: &Config) -> Result<(Store, Sealer), AppError> {
    let dir = &config.server.data_dir;
    let (db, key) = (dir.join(DB_FILE), dir.join(SEAL_KEY_FILE));
    let hint = || restore_hint(config);
    match (db.exists(), key.exists()) {
        (false, false) => {
            // First start. The key first: a crash between the two leaves a data dir that the
            // next start refuses (and says how to start over) rather than one it misreads.
            crate::store::ensure_private_dir(dir)?;
            let sealer = Sealer::create(&key)?;
            let store = Store::create(dir)?;
            store.write(|w| w.set_seal_key_id(sealer.id()))?;
            log::info!(
                "new data dir {}: made the database and its sealing key (id {})",
                dir.display(),
                key_id_hex(sealer.id())
            );
            Ok((store, sealer))
        }
        (false, true) => Err(StoreError::Missing {
            path: db,
            key,
            restore: String::new(),
        }
        .with_restore(hint())
        .into()),
        (true, has_key) => {
            let store = Store::open(dir).map_err(|e| e.with_restore(hint()))?;
            let recorded = store.read(|r| r.seal_key_id())?;
            if !has_key {
                return Err(crate::crypto::KeyError::Missing {
                    path: key,
                    db,
                    id: recorded
                        .map(key_id_hex)
                        .unwrap_or_else(|| "not recorded".into()),
                }
                .into());
            }
            let sealer = Sealer::load(&key)?;
            match recorded {
                Some(id) if id != sealer.id() => {
                    return Err(crate::crypto::KeyError::Mismatch {
                        path: key,
                        db,
                        found: key_id_hex(sealer.id()),
                        expected: key_id_hex(id),
                    }
                    .into());
                }
                Some(_) => {}
                // A database from before identities were recorded: adopt this key.
                None => store.write(|w| w.set_seal_key_id(sealer.id()))?,
            }
            Ok((store, sealer))
        }
    }
}
