//! HTTP: the routes, authentication, CORS, request logging, and the mapping
//! from errors to status codes. Handlers are thin: they parse the request, call
//! the [`crate::service`], and shape the answer.

pub mod answer_body;
pub mod answers;
pub mod auth;
pub mod budget;
pub mod convert;
pub mod cors;
pub mod error;
pub mod form;
pub mod log;
pub mod monitor;
pub mod proxy;
pub mod range;
pub mod shape;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Config;
use crate::service::Service;
use crate::system::SystemMonitor;
use crate::upstream::Upstream;
use auth::ApiKeys;
use error::ApiError;
use opusgate_cache::SharedTier;

/// Whether the server is stopping; `/readyz` answers 503 once it is.
#[derive(Clone, Default)]
pub struct ShutdownFlag(Arc<AtomicBool>);

impl ShutdownFlag {
    /// Marks the server as stopping.
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the server is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every handler can reach: one reference-counted [`AppParts`]
/// (read through `Deref`), so that the clones axum makes of the state for
/// every request (the route's, the handler's, the `State` extractor's)
/// cost one count each, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The state of a server made of `parts`.
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    /// The conversion pipeline.
    pub service: Service,
    /// The settings in force.
    pub config: Arc<Config>,
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// Machine and process figures.
    pub system: SystemMonitor,
    /// Set when shutdown begins.
    pub shutdown: ShutdownFlag,
    /// Proxy mode's backend.
    pub upstream: Upstream,
    /// The fleet's shared tier, when configured.
    pub shared: Option<SharedTier>,
    /// The memory budget of request bodies being read and held.
    pub uploads: budget::UploadBudget,
    /// The memory budget of answers being sent.
    pub answers: answers::AnswerBudget,
    /// The stats history (`GET /api/v1/stats/history`, the console's charts).
    pub history: crate::console::History,
}

/// Conversion duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder (installed once; several servers in
/// one process, as in tests, share it), with every metric described and the
/// start-up series registered at 0 when it is installed.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Suffix("_duration_seconds".into()),
                        &DURATION_BUCKETS,
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            let handle = builder().install_recorder().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
                builder().build_recorder().handle()
            });
            crate::stats::describe_all();
            crate::stats::register_startup_series();
            crate::stats::mark_recorder_installed();
            handle
        })
        .clone()
}

/// How often [`metrics_upkeep`] drains the recorder (the exporter's own
/// default upkeep interval).
pub const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the recorder's upkeep every [`METRICS_UPKEEP_INTERVAL`], forever.
///
/// A recorder installed with `install_recorder` keeps every histogram
/// sample until its upkeep folds them into the buckets, which otherwise
/// happens only when `/metrics` is scraped: without a scraper, memory grew
/// with every request (about 1.8 MB a minute at 750 requests/s in the soak).
pub async fn metrics_upkeep(handle: PrometheusHandle) {
    let mut ticks = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}

/// The whole application: routes, auth, logging, panic catching.
pub fn router(state: AppState) -> Router {
    let keys = ApiKeys::new(&state.config.auth.api_keys);
    let cors = cors::layer(&state.config.cors, keys.enabled());
    let protected = Router::new()
        .route("/api/v1/convert", post(convert::convert))
        .route("/api/v1/audio/{key}", get(convert::audio))
        .route("/api/v1/stats", get(monitor::stats))
        .route(
            "/api/v1/stats/history",
            get(crate::console::history::history),
        )
        .route("/api/v1/performance", get(monitor::performance))
        .route("/api/v1/concurrent-status", get(monitor::concurrent_status))
        .route("/metrics", get(monitor::metrics))
        .route("/v1/audio/transcriptions", post(proxy::transcriptions))
        .route("/v1/audio/translations", post(proxy::translations))
        .route("/v1/models", get(proxy::models))
        .route("/api/v1/translate_audio", post(proxy::translate_audio));
    // Without keys the check would let every request in: no layer at all.
    let protected = if keys.enabled() {
        protected.route_layer(middleware::from_fn_with_state(keys, auth::require_key))
    } else {
        protected
    };
    let open = Router::new()
        .route("/api/v1/health", get(monitor::health))
        .route("/healthz", get(monitor::healthz))
        .route("/readyz", get(monitor::readyz));
    // The console's page and assets: no key (its API calls send one), no body.
    let open = if state.config.console.enabled {
        open.merge(crate::console::routes())
    } else {
        open
    };
    let app = protected
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // The layers, outermost first, applied as one (a tuple of layers): each
    // `Router::layer` call wraps every route in one more boxed service,
    // which axum clones, box by box, for every request.
    // - the request log and its metrics;
    // - CORS: outside auth and every handler, so that a preflight is
    //   answered without a key and every answer (errors too) carries the
    //   headers; inside the log, so that preflights are logged and counted;
    // - panics caught, and errors in OpenAI's shape on `/v1/*` (a caught
    //   panic's too);
    // - no axum body limit: the upload limit is enforced while reading
    //   (form::read_body).
    let app = match cors {
        Some(cors) => app.layer((
            log::RequestLogLayer,
            cors,
            shape::ErrorShapeLayer,
            DefaultBodyLimit::disable(),
        )),
        None => app.layer((
            log::RequestLogLayer,
            shape::ErrorShapeLayer,
            DefaultBodyLimit::disable(),
        )),
    };
    app.with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
