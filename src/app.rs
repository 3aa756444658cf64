//! The composition root: opens the store and the sealing key, builds the leaf parts (clock,
//! hasher, metrics), then the services, handing each only the narrow things it uses:
//! [`Upstream`] (Keycloak), [`Auth`] (logins, sessions, passwords, accounts, the refresher) and
//! [`Syncer`] (the sync queue and its worker). Only the top sees `App`: `serve`, `cli`, `http`,
//! `admin` and the background task runners (`maintenance`). No domain module imports it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::tokens::TokenVault;
use crate::auth::{Auth, AuthParts};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::crypto::{Hasher, SEAL_KEY_FILE, Sealer};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::status::{AlertLog, StatusReport};
use crate::store::{Store, StoreError};
use crate::sync::{Queue, Syncer, SyncerParts};
use crate::upstream::{Upstream, UpstreamDeps};

#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub hasher: Hasher,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    /// Keycloak as a dependency (disabled when none is configured: local users only).
    pub upstream: Arc<Upstream>,
    pub auth: Arc<Auth>,
    pub sync: Arc<Syncer>,
    pub alert_log: AlertLog,
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
            .map_err(|e| ConfigError {
                file: config.origin.clone(),
                key: Some("argon2".into()),
                message: e.to_string(),
            })?
            .with_wait_observer(Arc::new(move |d| m.argon2_wait(d)));
        let started_at = clock.now();
        let (store, clock) = (Arc::new(store), Arc::new(clock));
        let sync_wakeup = Arc::new(tokio::sync::Notify::new());
        let upstream = Arc::new(Upstream::from_config(
            &config,
            UpstreamDeps {
                store: store.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                recovered: sync_wakeup.clone(),
            },
        )?);
        let queue = Queue::new(sealer.clone());
        let auth = Arc::new(Auth::new(AuthParts {
            store: store.clone(),
            clock: clock.clone(),
            hasher: hasher.clone(),
            tokens: TokenVault::new(sealer, config.keycloak.resilience.cache_tokens),
            policy: Arc::new(Policy::from_config(&config)),
            upstream: upstream.clone(),
            metrics: metrics.clone(),
            queue: queue.clone(),
            settings: crate::auth::Settings::from_config(&config),
        }));
        let sync = Arc::new(Syncer::new(SyncerParts {
            store: store.clone(),
            clock: clock.clone(),
            hasher: hasher.clone(),
            queue,
            upstream: upstream.clone(),
            metrics: metrics.clone(),
            config: config.keycloak.sync.clone(),
            wakeup: sync_wakeup,
        }));
        Ok(Arc::new(App {
            config: Arc::new(config),
            store,
            hasher,
            clock,
            metrics,
            upstream,
            auth,
            sync,
            alert_log: AlertLog::default(),
            started_at,
        }))
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.config.server.data_dir
    }

    /// The status report (`GET /api/v1/status`, `edgeauth status`, the maintenance pass).
    pub fn status(&self) -> Result<StatusReport, StoreError> {
        crate::status::report(&crate::status::Inputs {
            store: &self.store,
            clock: &self.clock,
            upstream: &self.upstream,
            metrics: &self.metrics,
            alerts: &self.config.alerts,
            session_idle: self.config.auth.session_idle.as_secs(),
            started_at: self.started_at,
        })
    }
}
