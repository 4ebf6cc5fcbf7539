//! Proxy mode's backend: calls to an OpenAI-compatible speech server, with a
//! concurrency limit, retries on connection errors, a deadline, and its
//! answers stored in a content-addressed store of their own (one backend
//! call per identical deterministic request in flight), or passed through
//! chunk by chunk when they are streams.
//!
//! [`Upstream`] owns the transport and the store; [`openai`] owns what is
//! said on the wire (payloads, URLs, request keys); [`answer`] the stored
//! form of an answer; [`stream`] answers that are passed through as they
//! come.

pub mod answer;
pub mod openai;
pub mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opusgate_cache::{ComputeError, Key, Outcome, SharedTier, Store, StoreConfig, StoreError};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::{Config, UpstreamConfig};
use crate::stats::names;
use answer::Answer;
use openai::Request;
use stream::{is_event_stream, StreamWhen, Streamed};

/// Why a backend call gave no usable answer. Cloned to every coalesced waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No `upstream.url` is configured.
    #[error("proxy mode is off: set upstream.url (OPUSGATE_UPSTREAM__URL)")]
    NotConfigured,
    /// The backend answered with a non-success status.
    #[error("the backend answered {status}")]
    Status {
        /// The backend's status.
        status: u16,
        /// Its content type.
        content_type: String,
        /// Its body.
        body: Bytes,
    },
    /// The backend did not answer within `upstream.timeout_seconds`.
    #[error("the backend did not answer within {0} s")]
    Timeout(u64),
    /// The backend could not be reached (after the retries).
    #[error("the backend could not be reached: {0}")]
    Unavailable(String),
    /// The backend's answer could not be used.
    #[error("the backend's answer could not be used: {0}")]
    BadAnswer(String),
}

/// How a flight of the answer store ends when it stores nothing.
#[derive(Debug, Clone)]
pub enum FlightError {
    /// The backend call failed.
    Failed(UpstreamError),
    /// A success that is not stored: an event stream answered to a request
    /// that did not ask for one (read whole, handed to the waiters, never
    /// stored).
    Unstored(Answer),
}

/// Proxy mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The answer store did not open.
    #[error("opening the answer store at {path}: {source}")]
    Store {
        /// The store directory.
        path: String,
        /// What failed.
        source: StoreError,
    },
    /// The HTTP client could not be built.
    #[error("building the backend client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Backend call counters.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    calls: AtomicU64,
    errors: AtomicU64,
    total_micros: AtomicU64,
}

/// A snapshot of [`UpstreamStats`] for `/api/v1/stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamSnapshot {
    /// Whether `upstream.url` is set.
    pub configured: bool,
    /// Backend calls made (each retry counts).
    pub calls: u64,
    /// Calls that gave no success answer.
    pub errors: u64,
    /// Mean call time, ms.
    pub avg_ms: f64,
}

/// The backend client; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    config: UpstreamConfig,
    client: reqwest::Client,
    /// Shared with the streams being passed through, which hold a permit
    /// until they end.
    permits: Arc<Semaphore>,
    stats: UpstreamStats,
    store: Store<FlightError>,
}

/// An answer and where it came from.
#[derive(Debug, Clone)]
pub struct Served {
    /// The backend's answer.
    pub answer: Answer,
    /// Store outcome, or `None` when the request bypassed the store.
    pub outcome: Option<Outcome>,
}

/// A backend's success answer: whole, or a stream passed through as it comes.
#[derive(Debug)]
pub enum Reply {
    /// Read to its end (and perhaps stored).
    Whole(Served),
    /// An event stream (or a chunked answer to `stream=true`), never stored.
    Stream(Streamed),
}

impl Reply {
    /// The whole answer, reading a stream to its end.
    pub async fn into_served(self) -> Result<Served, UpstreamError> {
        match self {
            Reply::Whole(served) => Ok(served),
            Reply::Stream(streamed) => Ok(Served {
                answer: streamed.collect().await?,
                outcome: None,
            }),
        }
    }
}

/// How a backend request may be answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Via {
    /// Through the answer store under this key: one backend call per key in
    /// flight, a success stored (unless `cache_responses` is off, then as
    /// `Direct`). An event stream is read whole and not stored.
    Store(Key),
    /// Straight to the backend; an event stream is passed through.
    Direct,
    /// The client asked for a stream (`stream=true`): straight to the
    /// backend, and an event stream or any chunked answer is passed through.
    Stream,
}

impl Upstream {
    /// Opens the answer store (`cache.dir`/upstream, with the fleet's
    /// `shared` tier, if any, for values of kind `answer`) and builds the
    /// client for the configured backend. Starts whether or not proxy mode
    /// is on, so that answers stored earlier stay counted.
    pub async fn start(
        config: &Config,
        shared: Option<&SharedTier>,
    ) -> Result<Upstream, StartError> {
        let dir = config.cache.upstream_dir();
        // A waiter gives up on another instance's backend call after what
        // the call may take with its retries, plus one lease.
        let u = &config.upstream;
        let max_wait = Duration::from_secs(
            u.timeout_seconds * (u64::from(u.retries) + 1) + config.shared.lease_seconds,
        );
        let store = Store::open(StoreConfig {
            memory_bytes: config.upstream.cache_memory_bytes,
            disk_path: dir.clone(),
            disk_bytes: config.upstream.cache_disk_bytes,
            shared: shared.map(|tier| tier.scope("answer", max_wait)),
        })
        .await
        .map_err(|source| StartError::Store {
            path: dir.display().to_string(),
            source,
        })?;
        let config = &config.upstream;
        // No client-wide timeout: it would cut a stream that outlives it.
        // Each call has its own deadlines (see `stream::exchange`).
        let client = reqwest::Client::builder().build()?;
        Ok(Upstream {
            inner: Arc::new(Inner {
                config: config.clone(),
                client,
                permits: Arc::new(Semaphore::new(config.max_concurrent)),
                stats: UpstreamStats::default(),
                store,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    /// Fails with `NotConfigured` when proxy mode is off.
    pub fn ensure_configured(&self) -> Result<(), UpstreamError> {
        if self.inner.config.url.is_empty() {
            Err(UpstreamError::NotConfigured)
        } else {
            Ok(())
        }
    }

    /// The full URL of a backend path such as `/audio/transcriptions`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.config.url.trim_end_matches('/'), path)
    }

    /// The answer store (for its counters).
    pub fn store(&self) -> &Store<FlightError> {
        &self.inner.store
    }

    /// Makes every stored answer durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.store.flush().await
    }

    /// Counters.
    pub fn snapshot(&self) -> UpstreamSnapshot {
        let s = &self.inner.stats;
        let calls = s.calls.load(Ordering::Relaxed);
        UpstreamSnapshot {
            configured: !self.inner.config.url.is_empty(),
            calls,
            errors: s.errors.load(Ordering::Relaxed),
            avg_ms: if calls == 0 {
                0.0
            } else {
                crate::stats::round2(
                    s.total_micros.load(Ordering::Relaxed) as f64 / calls as f64 / 1000.0,
                )
            },
        }
    }

    /// Answers `request` as `via` says: from the store when it holds the
    /// answer, else from one backend call (per key in flight) whose success
    /// is stored; or straight from the backend, passing a stream through.
    pub(crate) async fn serve(&self, via: Via, request: Request) -> Result<Reply, UpstreamError> {
        self.ensure_configured()?;
        let key = match via {
            Via::Store(key) if self.inner.config.cache_responses => key,
            Via::Store(_) | Via::Direct => {
                return self.call(request, StreamWhen::EventStream).await;
            }
            Via::Stream => return self.call(request, StreamWhen::EventStreamOrChunked).await,
        };
        let this = self.clone();
        let result = self
            .inner
            .store
            .get_or_compute(key, move || async move {
                let served = this
                    .call(request, StreamWhen::Never)
                    .await
                    .map_err(FlightError::Failed)?
                    .into_served()
                    .await
                    .map_err(FlightError::Failed)?;
                if is_event_stream(&served.answer.content_type) {
                    Err(FlightError::Unstored(served.answer))
                } else {
                    Ok(served.answer.encode())
                }
            })
            .await;
        match result {
            Ok((bytes, outcome)) => {
                metrics::counter!(names::UPSTREAM_CACHE, "outcome" => outcome.as_str())
                    .increment(1);
                let answer = Answer::decode(&bytes).ok_or_else(|| {
                    UpstreamError::BadAnswer("a stored answer did not decode".into())
                })?;
                Ok(Reply::Whole(Served {
                    answer,
                    outcome: Some(outcome),
                }))
            }
            Err(ComputeError::Failed(FlightError::Unstored(answer))) => Ok(Reply::Whole(Served {
                answer,
                outcome: None,
            })),
            Err(ComputeError::Failed(FlightError::Failed(e))) => Err(e),
            Err(ComputeError::Panicked) => {
                Err(UpstreamError::BadAnswer("the backend call panicked".into()))
            }
        }
    }

    /// One backend call with the concurrency limit and retries (of calls
    /// that could not connect, so always before the answer's first byte).
    /// A stream passed through keeps its permit until it ends or is dropped.
    async fn call(&self, request: Request, when: StreamWhen) -> Result<Reply, UpstreamError> {
        let inner = &self.inner;
        let permit = Arc::clone(&inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| UpstreamError::Unavailable("backend permits closed".into()))?;
        let timeout = inner.config.timeout_seconds;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let mut builder = request.build(&inner.client);
            if !inner.config.api_key.is_empty() {
                builder = builder.bearer_auth(&inner.config.api_key);
            }
            // A stream's call is counted up to its head.
            let result = stream::exchange(builder, timeout, when).await;
            let took = started.elapsed();
            inner.stats.calls.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            inner
                .stats
                .total_micros
                .fetch_add(micros, Ordering::Relaxed);
            metrics::histogram!(names::UPSTREAM_DURATION).record(took.as_secs_f64());
            let label = match &result {
                Ok(_) => "ok",
                Err(UpstreamError::Status { .. }) => "status",
                Err(UpstreamError::Timeout(_)) => "timeout",
                Err(_) => "unavailable",
            };
            metrics::counter!(names::UPSTREAM_CALLS, "result" => label).increment(1);
            match result {
                Ok(stream::Exchange::Whole(mut answer)) => {
                    answer.backend_seconds = took.as_secs_f64();
                    return Ok(Reply::Whole(Served {
                        answer,
                        outcome: None,
                    }));
                }
                Ok(stream::Exchange::Stream(response)) => {
                    return Ok(Reply::Stream(Streamed::new(response, permit, timeout)));
                }
                Err(UpstreamError::Unavailable(why)) if attempt < inner.config.retries => {
                    inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    let backoff = Duration::from_millis(100 << attempt.min(6));
                    tracing::warn!(attempt, error = %why, "backend unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }
}
