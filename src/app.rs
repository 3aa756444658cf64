//! The assembled appliance: config, store, hasher, clock, metrics and the activity map,
//! opened once and shared by the HTTP server, the admin socket and the maintenance task.

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::session::Activity;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::{Hasher, SEAL_KEY_FILE, Sealer};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::Keycloak;

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
    /// Wakes the sync worker (Keycloak came back, or an operator asked).
    pub sync_wakeup: tokio::sync::Notify,
    /// Seals Keycloak tokens and queued passwords at rest (used by the Keycloak tier).
    pub sealer: Sealer,
    pub started_at: u64,
}

impl App {
    /// Opens the store (creating the data dir and sealing key on first start).
    pub fn open(config: Config) -> Result<Arc<App>, AppError> {
        let store = Store::open(&config.server.data_dir)?;
        Self::assemble(config, store)
    }

    /// Like [`App::open`], with redb's full integrity check first (`db check`).
    pub fn open_checked(config: Config) -> Result<Arc<App>, AppError> {
        let store = Store::open_checked(&config.server.data_dir)?;
        Self::assemble(config, store)
    }

    fn assemble(config: Config, store: Store) -> Result<Arc<App>, AppError> {
        let sealer = Sealer::load_or_create(&config.server.data_dir.join(SEAL_KEY_FILE))?;
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
            sync_wakeup: tokio::sync::Notify::new(),
            sealer,
            started_at,
        }))
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.config.server.data_dir
    }
}
