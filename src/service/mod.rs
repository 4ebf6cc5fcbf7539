//! The pipeline from upload to answer: key the upload, look it up in the
//! store, and on a miss run exactly one conversion per key, admitted by the
//! wait queue and the conversion permits, on the worker pool.
//!
//! Nothing here knows HTTP: the `http` module turns [`ServiceError`] into
//! status codes.

mod found;
pub mod pool;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opusgate_cache::{Key, Outcome, SharedTier, Store, StoreConfig, StoreError};
use tokio::sync::Semaphore;

use crate::codec::{self, CodecError, ConvertOptions, CONVERTER_REVISION};
use crate::config::Config;
use crate::stats::{self, ConversionStats, RequestStats};
pub use found::FoundConversion;
use pool::{JobLost, WorkerPool};

/// Uploads at least this large are hashed on a blocking thread.
const HASH_OFF_THREAD_BYTES: usize = 256 * 1024;

/// What a key hashes besides the upload: the converter's revision, the
/// output parameters and leniency (which changes what is produced).
fn key_params(params: Params, lenient: bool) -> Vec<u8> {
    format!(
        "opusgate/convert;rev={CONVERTER_REVISION};rate={};channels={};lenient={lenient}",
        params.rate, params.channels
    )
    .into_bytes()
}

/// Seconds a client is told to wait after a 503 `overloaded`.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Why a conversion request did not produce audio.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The upload or the parameters were refused by the converter.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The wait queue is full.
    #[error("too many conversions are waiting; retry after {RETRY_AFTER_SECONDS} s")]
    Overloaded,
    /// Something that is not the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store did not open.
    #[error("opening the store at {path}: {source}")]
    Store {
        /// The store directory.
        path: String,
        /// What failed.
        source: StoreError,
    },
    /// The worker threads did not start.
    #[error("starting the conversion workers: {0}")]
    Workers(#[from] std::io::Error),
}

/// Output parameters of one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Output sample rate in Hz.
    pub rate: u32,
    /// Output channels (1 or 2).
    pub channels: u8,
}

/// A conversion's answer.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// Content address of (upload, parameters, converter revision).
    pub key: Key,
    /// The complete WAV file.
    pub wav: Bytes,
    /// Which tier answered, or whether this request converted.
    pub outcome: Outcome,
}

/// The conversion service; cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store<ServiceError>,
    pool: WorkerPool,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    max_queued: usize,
    default_params: Params,
    /// `key_params(default_params, lenient)`.
    default_key_params: Vec<u8>,
    lenient: bool,
    max_duration: Duration,
    timeout: Duration,
    conversions: ConversionStats,
    requests: RequestStats,
}

impl Service {
    /// Opens the store (with the fleet's `shared` tier, if any, for values
    /// of kind `wav`) and starts the worker pool.
    pub async fn start(
        config: &Config,
        shared: Option<&SharedTier>,
    ) -> Result<Service, StartError> {
        // A waiter gives up on another instance's conversion after what a
        // conversion may take (queue and deadline) plus one lease.
        let max_wait =
            config.conversion_timeout() * 2 + Duration::from_secs(config.shared.lease_seconds);
        let store = Store::open(StoreConfig {
            memory_bytes: config.cache.memory_bytes,
            disk_path: config.cache.audio_dir(),
            disk_bytes: config.cache.disk_bytes,
            shared: shared.map(|tier| tier.scope("wav", max_wait)),
        })
        .await
        .map_err(|source| StartError::Store {
            path: config.cache.audio_dir().display().to_string(),
            source,
        })?;
        let c = &config.conversion;
        let pool = WorkerPool::new(c.effective_workers())?;
        let max_concurrent = c.effective_max_concurrent();
        let default_params = Params {
            rate: c.default_rate,
            channels: c.default_channels,
        };
        Ok(Service {
            inner: Arc::new(Inner {
                store,
                pool,
                permits: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_queued: c.max_queued,
                default_params,
                default_key_params: key_params(default_params, c.lenient),
                lenient: c.lenient,
                max_duration: Duration::from_secs(config.limits.max_duration_seconds),
                timeout: config.conversion_timeout(),
                conversions: ConversionStats::default(),
                requests: RequestStats::default(),
            }),
        })
    }

    /// Fills in the configured defaults and checks the parameters.
    pub fn params(&self, rate: Option<u32>, channels: Option<u8>) -> Result<Params, ServiceError> {
        let d = self.inner.default_params;
        let params = Params {
            rate: rate.unwrap_or(d.rate),
            channels: channels.unwrap_or(d.channels),
        };
        self.options(params, None).validate()?;
        Ok(params)
    }

    fn options(&self, params: Params, deadline: Option<Instant>) -> ConvertOptions {
        ConvertOptions {
            rate: params.rate,
            channels: params.channels,
            max_duration: self.inner.max_duration,
            lenient: self.inner.lenient,
            deadline,
        }
    }

    /// The content address of an upload converted with `params` by this
    /// converter revision (and leniency, which changes what is produced).
    pub fn key(&self, upload: &[u8], params: Params) -> Key {
        Key::derive(upload, &self.key_params(params))
    }

    /// What the key hashes besides the upload; made once for the default
    /// parameters (most requests), not per request.
    fn key_params(&self, params: Params) -> Cow<'_, [u8]> {
        if params == self.inner.default_params {
            Cow::Borrowed(&self.inner.default_key_params)
        } else {
            Cow::Owned(key_params(params, self.inner.lenient))
        }
    }

    async fn key_off_thread(&self, upload: &Bytes, params: Params) -> Result<Key, ServiceError> {
        if upload.len() < HASH_OFF_THREAD_BYTES {
            return Ok(self.key(upload, params));
        }
        let upload = upload.clone();
        let key_params = self.key_params(params).into_owned();
        tokio::task::spawn_blocking(move || Key::derive(&upload, &key_params))
            .await
            .map_err(|e| ServiceError::Internal(format!("hashing the upload: {e}")))
    }

    /// Converts an upload, or answers from the store; one conversion per key
    /// however many identical requests are in flight.
    pub async fn convert(&self, upload: Bytes, params: Params) -> Result<Conversion, ServiceError> {
        self.inner.requests.record_conversion_request();
        let key = self.key_off_thread(&upload, params).await?;
        let service = self.clone();
        let result = self
            .inner
            .store
            .get_or_compute(key, move || async move {
                service.run_conversion(upload, params).await
            })
            .await;
        match result {
            Ok((wav, outcome)) => {
                stats::count_cache_lookup(outcome);
                Ok(Conversion { key, wav, outcome })
            }
            Err(error) => Err(found::compute_error(error)),
        }
    }

    /// Waits in the queue for a permit, then converts on the worker pool.
    /// Runs inside the store's single-flight task, so it finishes even when
    /// the request that started it goes away.
    async fn run_conversion(&self, upload: Bytes, params: Params) -> Result<Bytes, ServiceError> {
        let inner = &self.inner;
        let permit = match Arc::clone(&inner.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let Some(_queued) = inner.conversions.try_enter_queue(inner.max_queued) else {
                    inner.conversions.record_rejected();
                    return Err(ServiceError::Overloaded);
                };
                Arc::clone(&inner.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| ServiceError::Internal("conversion permits closed".into()))?
            }
        };
        let _active = inner.conversions.enter_active();
        let started = Instant::now();
        let options = self.options(params, Some(started + inner.timeout));
        let input = upload.clone();
        let result = inner
            .pool
            .run(move || codec::convert(&input, &options))
            .await;
        drop(permit);
        let result = match result {
            Ok(Ok(converted)) => {
                if let Some(repaired) = &converted.repaired {
                    // Decoded as ffmpeg does; the key (hashed again, as this
                    // is rare) says which upload it was.
                    let key = self.key_off_thread(&upload, params).await;
                    let key = key.map(|k| k.to_hex()).unwrap_or_default();
                    tracing::warn!(%key, %repaired, "repaired an Ogg Opus stream");
                    inner.conversions.record_repaired();
                }
                Ok(Bytes::from(converted.wav))
            }
            Ok(Err(e)) => Err(ServiceError::Codec(e)),
            Err(JobLost) => Err(ServiceError::Internal(JobLost.to_string())),
        };
        inner
            .conversions
            .record_finished(result.is_ok(), started.elapsed());
        if let Err(ServiceError::Internal(why)) = &result {
            tracing::error!(error = %why, "conversion failed internally");
        }
        result
    }

    /// A stored WAV by its key, without converting (not counted as a lookup).
    pub async fn audio(&self, key: &Key) -> Option<Bytes> {
        self.inner.store.get(key).await.map(|(value, _tier)| value)
    }

    /// The store, for stats and shutdown.
    pub fn store(&self) -> &Store<ServiceError> {
        &self.inner.store
    }

    /// Conversion counters.
    pub fn conversions(&self) -> &ConversionStats {
        &self.inner.conversions
    }

    /// Request counters.
    pub fn requests(&self) -> &RequestStats {
        &self.inner.requests
    }

    /// Permits: conversions that may run at once.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// Places in the wait queue.
    pub fn max_queued(&self) -> usize {
        self.inner.max_queued
    }

    /// Threads in the worker pool.
    pub fn workers(&self) -> usize {
        self.inner.pool.size()
    }

    /// Makes every stored value durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.store.flush().await
    }
}
