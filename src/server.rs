//! The server's life: start the [`Service`] and the [`Upstream`] side by
//! side, serve HTTP on a listener until the shutdown signal (sampling the
//! stats history for the console meanwhile), let in-flight requests finish
//! within the grace period, flush both stores.
//!
//! [`run`] takes its own listener and shutdown future, so that tests can bind
//! 127.0.0.1:0 and stop the server when they like.
//!
//! Connections are served by `serve`'s accept loop on hyper-util: HTTP/1.1
//! only, keep-alive, `TCP_NODELAY`, and the request head due within
//! `server.header_read_timeout_seconds` on tokio's timer (`axum::serve` runs
//! hyper without a timer, so it could not time heads out; the auto
//! builder's protocol sniffing, which reads the first bytes with no
//! deadline, is skipped by `http1_only`). The request body has its own
//! deadline (`server.request_read_timeout_seconds`, 408), enforced in
//! [`crate::http::form`]. An answer the client does not take (the socket
//! accepts no byte for `server.write_timeout_seconds`) ends its connection
//! ([`deadline`]). A connection closed while the client is still sending
//! is drained for a moment first, so the client reads the answer rather
//! than a reset ([`linger`]). On shutdown, hyper-util's `GracefulShutdown` closes idle
//! connections at once and the others after their answer, all of them
//! within the grace period. A failed accept (`EMFILE`, say) is logged and
//! retried after a second.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod deadline;
mod linger;

use crate::config::Config;
use crate::console;
use crate::http::{self, AppParts, AppState, ShutdownFlag};
use crate::service::{self, Service};
use crate::system::SystemMonitor;
use crate::upstream::{self, Upstream};
use opusgate_cache::SharedTier;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The conversion service did not start.
    #[error(transparent)]
    Service(#[from] service::StartError),
    /// Proxy mode (its answer store or its client) did not start.
    #[error("starting proxy mode: {0}")]
    Upstream(#[from] upstream::StartError),
    /// The shared tier's settings cannot be used (an unreachable Redis is
    /// not an error: the instance starts and connects in the background).
    #[error("starting the shared tier: {0}")]
    Shared(#[from] opusgate_cache::SharedError),
}

/// Serves opusgate on `listener` until `shutdown` resolves, then drains
/// in-flight requests (at most `server.shutdown_grace_seconds`) and
/// flushes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let shared = config.shared.tier().map(SharedTier::start).transpose()?;
    let service = Service::start(&config, shared.as_ref()).await?;
    let upstream = Upstream::start(&config, shared.as_ref()).await?;
    let flag = ShutdownFlag::default();
    let uploads = http::budget::UploadBudget::new(config.limits.max_inflight_upload_bytes);
    let answers = http::answers::AnswerBudget::new(config.limits.max_inflight_answer_bytes);
    let history = console::History::new(
        config.console.history_points,
        Duration::from_secs(config.console.history_interval_seconds),
    );
    let state = AppState::new(AppParts {
        service: service.clone(),
        config: Arc::new(config),
        metrics: http::metrics_handle(),
        system: SystemMonitor::start(),
        shutdown: flag.clone(),
        upstream: upstream.clone(),
        shared,
        uploads,
        answers,
        history,
    });
    let upkeep = http::metrics_upkeep(state.metrics.clone());
    // Samples the stats into the history until the server stops serving.
    let sampler = console::history::sample(state.clone());
    let grace = Duration::from_secs(state.config.server.shutdown_grace_seconds);
    let connections = connection_builder(state.config.header_read_timeout());
    let write_timeout = Duration::from_secs_f64(state.config.server.write_timeout_seconds);
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
    let serving = serve(listener, app, connections, write_timeout, signal);
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
        () = serving => {},
        () = grace_over => tracing::warn!("grace period over: dropping the requests still in flight"),
        () = upkeep => {},
        () = sampler => {},
    }
    // Every answer has been sent by now; a store that cannot be made
    // durable (a full disk, say) costs cache entries, not answers, and its
    // records are checked at the next open. So it is logged, not an exit
    // status.
    let mut flushed = true;
    for (store, result) in [
        ("audio", service.flush().await),
        ("upstream", upstream.flush().await),
    ] {
        if let Err(error) = result {
            tracing::error!(store, %error, "flushing the store at shutdown failed");
            flushed = false;
        }
    }
    tracing::info!(flushed, "stopped");
    Ok(())
}

/// How long the accept loop waits after a failed accept before the next one.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How every connection is served: HTTP/1.1 only, keep-alive on, and the
/// request head due within `header_timeout` (on tokio's timer, without which
/// hyper has no timeouts at all).
fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    // `http1_only` with `serve_connection` (not `serve_connection_with_upgrades`,
    // which ignores it) skips the auto builder's version sniffing, which reads
    // the first bytes with no deadline: hyper's HTTP/1 header timer then runs
    // from the start of the connection. opusgate has no upgrade routes.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
}

/// Accepts and serves connections until `signal` resolves, then stops
/// accepting, asks every connection to close once its request in flight is
/// answered (idle ones close at once) and resolves when all have closed.
/// Each connection's writes fail once they make no progress for
/// `write_timeout`.
async fn serve(
    listener: TcpListener,
    app: Router,
    connections: auto::Builder<TokioExecutor>,
    write_timeout: Duration,
    signal: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut signal = pin!(signal);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we accepted; nothing to wait for.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    retry_in_ms = ACCEPT_ERROR_BACKOFF.as_millis() as u64,
                    "accepting a connection failed"
                );
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    () = &mut signal => break,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let stream = linger::Linger::new(stream);
        let io = TokioIo::new(deadline::WriteDeadline::new(stream, write_timeout));
        let connection = connections.serve_connection(io, service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log_connection_error(peer, e.as_ref());
            }
        });
    }
    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "stopped accepting; waiting for open connections"
    );
    graceful.shutdown().await;
}

/// Errors of `accept` that concern one client only (axum::serve's list).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// A connection that ended with an error: a request head that did not
/// arrive in time (hyper reports an idle keep-alive connection's end the
/// same way), or an answer the client stopped taking, is worth a line at
/// info; the rest (resets, parse errors) are the client's business.
fn log_connection_error(
    peer: std::net::SocketAddr,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let timed_out = error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout);
    let mut source = Some(error as &(dyn std::error::Error + 'static));
    let write_timed_out = std::iter::from_fn(|| {
        let error = source?;
        source = error.source();
        Some(error)
    })
    .find_map(|e| {
        e.downcast_ref::<std::io::Error>()?
            .get_ref()?
            .downcast_ref::<deadline::WriteTimedOut>()
    });
    if let Some(deadline::WriteTimedOut(timeout)) = write_timed_out {
        tracing::info!(
            %peer,
            "answer made no progress for {} s (server.write_timeout_seconds); connection closed",
            timeout.as_secs_f64()
        );
    } else if timed_out {
        tracing::info!(
            %peer,
            "request head not received within server.header_read_timeout_seconds (a slow client, or a keep-alive connection left idle); connection closed"
        );
    } else {
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    }
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
