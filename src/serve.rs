//! `edgeauth serve`: start-up and shutdown of the appliance.
//!
//! Order: open the store (which takes redb's lock, so a second server fails fast and clearly),
//! load TLS, bind the listener and the admin socket, start the maintenance task, serve until
//! SIGINT/SIGTERM, drain requests in flight, flush activity, and exit.

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::{Config, ConfigSource};
use crate::error::AppError;

pub fn run(config: Config, source: ConfigSource) -> Result<(), AppError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .map_err(|e| AppError::Runtime(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(serve(config, source))
}

async fn serve(config: Config, source: ConfigSource) -> Result<(), AppError> {
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(c), Some(k)) => Some(TlsAcceptor::from(
            crate::tls::server_config(c, k).map_err(AppError::Runtime)?,
        )),
        _ => None,
    };
    let listen = config.server.listen;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let app = open_waiting(config).await?;
    // `serve` refuses what `db check` calls corrupt: the pages were verified by the open, the
    // records are verified here.
    let a = app.clone();
    tokio::task::spawn_blocking(move || a.store.check_records())
        .await
        .map_err(|e| AppError::Runtime(e.to_string()))?
        .map_err(|e| match e {
            crate::store::StoreError::Decode { .. } => crate::store::StoreError::Corrupt {
                path: app.store.path().to_path_buf(),
                detail: e.to_string(),
                restore: crate::app::restore_hint(&app.config),
            },
            other => other,
        })?;
    let listener = crate::http::server::bind(listen)
        .await
        .map_err(AppError::Runtime)?;
    let admin = crate::admin::socket::bind(app.data_dir())?;

    let keycloak = match &app.config.keycloak.server {
        Some(server) => format!(
            "Keycloak {server} realm {}",
            app.config.keycloak.realm.as_deref().unwrap_or("")
        ),
        None => "no Keycloak configured: local users only".to_owned(),
    };
    match &source {
        ConfigSource::Defaults => log::info!(
            "edgeauth {} on {scheme}://{listen} running on embedded defaults ({keycloak}, loopback HTTP), data in {}",
            env!("CARGO_PKG_VERSION"),
            app.data_dir().display()
        ),
        ConfigSource::File(p) => log::info!(
            "edgeauth {} on {scheme}://{listen} with config {} ({keycloak}), data in {}",
            env!("CARGO_PKG_VERSION"),
            p.display(),
            app.data_dir().display()
        ),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let maintenance = tokio::spawn(crate::maintenance::run(app.clone(), stop_rx.clone()));
    let recovery = tokio::spawn(crate::maintenance::recover(app.clone(), stop_rx.clone()));
    let refresher = tokio::spawn(app.auth.clone().run_refresher(stop_rx.clone()));
    let sync_worker = tokio::spawn(app.sync.clone().run(stop_rx.clone()));
    let monitor = tokio::spawn(app.upstream.clone().run_monitor(stop_rx.clone()));
    let admin_task = tokio::spawn(crate::admin::socket::serve(
        app.clone(),
        admin,
        stop_rx.clone(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        log::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
    });

    let router = crate::http::router(app.clone());
    crate::http::server::serve(
        listener,
        router,
        tls,
        crate::http::server::Limits::from_config(&app.config.server),
        stop_rx,
    )
    .await;
    let _ = admin_task.await;
    let _ = monitor.await;
    let _ = refresher.await;
    let _ = sync_worker.await;
    let _ = maintenance.await;
    let _ = recovery.await;
    log::info!("stopped");
    Ok(())
}

/// Opens the store, waiting up to [`LOCK_WAIT`] while another process holds it: an
/// operator's `edgeauth status` or `user add` opens the database for a moment when no server
/// runs, and a start that coincides with one must not fail.
async fn open_waiting(config: Config) -> Result<std::sync::Arc<App>, AppError> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        match App::open(config.clone()) {
            Err(AppError::Store(crate::store::StoreError::Locked { path }))
                if started.elapsed() < LOCK_WAIT =>
            {
                if !said {
                    log::info!(
                        "waiting for {} (held by another edgeauth command)",
                        path.display()
                    );
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// How long `serve` waits for a database lock held by a short CLI command.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
