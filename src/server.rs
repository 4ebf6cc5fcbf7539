//! The server's life: start the service on a listener, serve until the
//! shutdown signal, let in-flight requests finish within the grace period,
//! flush the store.
//!
//! [`run`] takes its own listener and shutdown future, so that tests can bind
//! 127.0.0.1:0 and stop the server when they like.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, AppState, ShutdownFlag};
use crate::service::{Service, StartError};
use crate::system::SystemMonitor;
use crate::upstream::Upstream;
use opusgate_cache::{Store, StoreConfig};

/// Subdirectory of `cache.dir` holding proxy mode's backend answers.
pub const UPSTREAM_STORE_DIR: &str = "upstream";

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The service did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Accepting connections failed.
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
    /// The backend client or its answer store did not start.
    #[error("starting proxy mode: {0}")]
    Upstream(String),
    /// The store could not be made durable at shutdown.
    #[error("flushing the store at shutdown: {0}")]
    Flush(#[from] opusgate_cache::StoreError),
}

/// Serves opusgate on `listener` until `shutdown` resolves, then drains
/// in-flight requests (at most `server.shutdown_grace_seconds`) and
/// flushes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let service = Service::start(&config).await?;
    let answers = Store::open(StoreConfig {
        memory_bytes: config.upstream.cache_memory_bytes,
        disk_path: config.cache.dir.join(UPSTREAM_STORE_DIR),
        disk_bytes: config.upstream.cache_disk_bytes,
    })
    .await
    .map_err(|e| ServerError::Upstream(e.to_string()))?;
    let upstream = Upstream::new(&config.upstream, answers.clone())
        .map_err(|e| ServerError::Upstream(e.to_string()))?;
    let flag = ShutdownFlag::default();
    let state = AppState {
        service: service.clone(),
        config: Arc::new(config),
        metrics: http::metrics_handle(),
        system: SystemMonitor::start(),
        shutdown: flag.clone(),
        upstream,
    };
    let grace = Duration::from_secs(state.config.server.shutdown_grace_seconds);
    let app = http::router(state);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "opusgate listening");
    }

    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        flag.begin();
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        let _ = stopping_tx.send(true);
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
    let grace_over = async move {
        // Wait for the signal, then give in-flight requests the grace period.
        while !*stopping_rx.borrow_and_update() {
            if stopping_rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served?,
        () = grace_over => tracing::warn!("grace period over: dropping the requests still in flight"),
    }
    service.flush().await?;
    answers.flush().await?;
    tracing::info!("store flushed; stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
