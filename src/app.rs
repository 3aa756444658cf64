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
use crate::config::web::Logo;
use crate::config::{Config, ConfigError};
use crate::crypto::{Hasher, SEAL_KEY_FILE, Sealer};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::status::{AlertLog, StatusReport};
use crate::store::backup::{key_id_hex, list_snapshots};
use crate::store::{DB_FILE, Store, StoreError};
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
    /// The access rules forward-auth asks (`[access]`, compiled once).
    pub access: Arc<crate::access::Rules>,
    pub alert_log: AlertLog,
    /// Set when a proxy on this box is not named in `server.trusted_proxies` (an alert).
    pub local_proxy: crate::status::LocalProxyHint,
    /// Seals Keycloak tokens and queued passwords at rest; its id names the snapshots.
    pub sealer: Sealer,
    pub started_at: u64,
    /// The newest good snapshot and the last snapshot failure, for status.
    pub snapshots: std::sync::Mutex<SnapshotState>,
    /// `web.logo`, read once at start (the pages serve it from memory).
    pub logo: Option<Arc<Logo>>,
}

pub use crate::store::backup::SnapshotState;

impl App {
    /// Opens the data dir: the database and its sealing key. Both are made only on the first
    /// start, when the data dir holds neither; any other missing, empty or mismatched file
    /// is refused with the file named and the restore command.
    pub fn open(config: Config) -> Result<Arc<App>, AppError> {
        crate::upstream::realm::preflight(&config, &config.origin)?;
        let logo = config.web.load_logo().map_err(|message| ConfigError {
            file: config.origin.clone(),
            key: Some("web.logo".into()),
            message,
        })?;
        let (store, sealer) = open_data_dir(&config)?;
        Self::assemble(config, store, sealer, logo.map(Arc::new))
    }

    fn assemble(
        config: Config,
        store: Store,
        sealer: Sealer,
        logo: Option<Arc<Logo>>,
    ) -> Result<Arc<App>, AppError> {
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
        let sealer_for_app = sealer.clone();
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
        let access = Arc::new(crate::access::Rules::new(&config.access));
        Ok(Arc::new(App {
            access,
            config: Arc::new(config),
            store,
            hasher,
            clock,
            metrics,
            upstream,
            auth,
            sync,
            alert_log: AlertLog::default(),
            local_proxy: Default::default(),
            sealer: sealer_for_app,
            started_at,
            snapshots: std::sync::Mutex::new(snapshots),
            logo,
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
            snapshots: self
                .snapshots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            snapshot_dir: self
                .config
                .backup
                .snapshot_dir(self.data_dir())
                .display()
                .to_string(),
            restore_hint: restore_hint(&self.config),
            local_proxy_since: self.local_proxy.since(),
        })
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
