//! Proxy mode's backend: calls to an OpenAI-compatible speech server, with a
//! concurrency limit, retries on connection errors, a deadline, and its
//! answers stored in a content-addressed store of their own (one backend
//! call per identical deterministic request in flight).
//!
//! [`Upstream`] owns the transport and the store; [`openai`] owns what is
//! said on the wire (payloads, URLs, request keys); [`answer`] the stored
//! form of an answer.

pub mod answer;
pub mod openai;

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
    permits: Semaphore,
    stats: UpstreamStats,
    store: Store<UpstreamError>,
}

/// An answer and where it came from.
#[derive(Debug, Clone)]
pub struct Served {
    /// The backend's answer.
    pub answer: Answer,
    /// Store outcome, or `None` when the request bypassed the store.
    pub outcome: Option<Outcome>,
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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .build()?;
        Ok(Upstream {
            inner: Arc::new(Inner {
                config: config.clone(),
                client,
                permits: Semaphore::new(config.max_concurrent),
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
    pub fn store(&self) -> &Store<UpstreamError> {
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

    /// Answers `request` from the store when `cache_key` is given and the
    /// answer is stored; otherwise calls the backend (once per key in flight)
    /// and stores a success. Without a key the call is made directly.
    pub(crate) async fn serve(
        &self,
        cache_key: Option<Key>,
        request: Request,
    ) -> Result<Served, UpstreamError> {
        self.ensure_configured()?;
        let key = match cache_key {
            Some(key) if self.inner.config.cache_responses => key,
            _ => {
                let answer = self.call(request).await?;
                return Ok(Served {
                    answer,
                    outcome: None,
                });
            }
        };
        let this = self.clone();
        let result = self
            .inner
            .store
            .get_or_compute(key, move || async move {
                this.call(request).await.map(|a| a.encode())
            })
            .await;
        match result {
            Ok((bytes, outcome)) => {
                metrics::counter!(names::UPSTREAM_CACHE, "outcome" => outcome.as_str())
                    .increment(1);
                let answer = Answer::decode(&bytes).ok_or_else(|| {
                    UpstreamError::BadAnswer("a stored answer did not decode".into())
                })?;
                Ok(Served {
                    answer,
                    outcome: Some(outcome),
                })
            }
            Err(ComputeError::Failed(e)) => Err(e),
            Err(ComputeError::Panicked) => {
                Err(UpstreamError::BadAnswer("the backend call panicked".into()))
            }
        }
    }

    /// One backend call with the concurrency limit and retries.
    async fn call(&self, request: Request) -> Result<Answer, UpstreamError> {
        let inner = &self.inner;
        let _permit = inner
            .permits
            .acquire()
            .await
            .map_err(|_| UpstreamError::Unavailable("backend permits closed".into()))?;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let mut builder = request.build(&inner.client);
            if !inner.config.api_key.is_empty() {
                builder = builder.bearer_auth(&inner.config.api_key);
            }
            let result = send(builder, inner.config.timeout_seconds).await;
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
                Ok(mut answer) => {
                    answer.backend_seconds = took.as_secs_f64();
                    return Ok(answer);
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

async fn send(builder: reqwest::RequestBuilder, timeout: u64) -> Result<Answer, UpstreamError> {
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            UpstreamError::Timeout(timeout)
        } else {
            UpstreamError::Unavailable(e.to_string())
        }
    };
    let response = builder.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let body = response.bytes().await.map_err(classify)?;
    if (200..300).contains(&status) {
        Ok(Answer {
            status,
            content_type,
            body,
            backend_seconds: 0.0,
        })
    } else {
        Err(UpstreamError::Status {
            status,
            content_type,
            body,
        })
    }
}
