//! Lookups for answers that may be sent from disk: a conversion's answer and
//! a stored WAV by key as a [`Found`], so that a disk record longer than the
//! caller can hold in memory comes as a verified reader of its file instead
//! of being read whole (see `crate::http::answer_body`).

use bytes::Bytes;
use opusgate_cache::{ComputeError, Found, Key, Outcome, ValueReader};

use super::{Params, Service, ServiceError, HASH_OFF_THREAD_BYTES};
use crate::stats;

/// A conversion's answer, which may still be on disk.
#[derive(Debug)]
pub struct FoundConversion {
    /// Content address of (upload, parameters, converter revision).
    pub key: Key,
    /// The WAV, whole or as a verified reader of its disk record.
    pub found: Found,
    /// Which tier answered, or whether this request converted.
    pub outcome: Outcome,
}

/// What a failed or panicked conversion tells its callers.
pub(super) fn compute_error(error: ComputeError<ServiceError>) -> ServiceError {
    match error {
        ComputeError::Failed(e) => e,
        ComputeError::Panicked => {
            ServiceError::Internal("the conversion panicked; it was logged and not stored".into())
        }
    }
}

impl Service {
    /// [`Service::convert`], except that for an answer found on disk (and
    /// not in memory) `whole(key, len)` is asked first, and if it says
    /// false the answer comes as a verified reader of its record instead of
    /// being read whole (see `Store::get_or_compute_found`).
    pub async fn convert_found(
        &self,
        upload: Bytes,
        params: Params,
        whole: impl FnOnce(&Key, u64) -> bool + Send,
    ) -> Result<FoundConversion, ServiceError> {
        let key = self.key_off_thread(&upload, params).await?;
        self.convert_found_keyed(key, upload, params, whole).await
    }

    /// [`Service::convert_found`] for an upload lent as a view of a buffer
    /// that must not be held for long (the connection's read buffer, which
    /// may be much larger than the upload): it is hashed and looked up in
    /// memory where it lies, and only if that look misses does `hold` copy
    /// it into a buffer of its own, to be held through the other tiers and
    /// a conversion. A memory hit (the hot path) thus copies nothing.
    pub async fn convert_found_lent(
        &self,
        lent: Bytes,
        hold: impl FnOnce(&[u8]) -> Bytes,
        params: Params,
        whole: impl FnOnce(&Key, u64) -> bool + Send,
    ) -> Result<FoundConversion, ServiceError> {
        if lent.len() >= HASH_OFF_THREAD_BYTES {
            // Hashed on a blocking thread, which needs an upload it owns.
            let upload = hold(&lent);
            drop(lent);
            return self.convert_found(upload, params, whole).await;
        }
        let key = self.key(&lent, params);
        if let Some(value) = self.inner.store.get_memory(&key).await {
            self.inner.requests.record_conversion_request();
            stats::count_cache_lookup(Outcome::HitMemory);
            return Ok(FoundConversion {
                key,
                found: Found::Value(value),
                outcome: Outcome::HitMemory,
            });
        }
        let upload = hold(&lent);
        drop(lent);
        self.convert_found_keyed(key, upload, params, whole).await
    }

    /// [`Service::convert_found`] with the upload's key already derived.
    async fn convert_found_keyed(
        &self,
        key: Key,
        upload: Bytes,
        params: Params,
        whole: impl FnOnce(&Key, u64) -> bool + Send,
    ) -> Result<FoundConversion, ServiceError> {
        self.inner.requests.record_conversion_request();
        let service = self.clone();
        let (found, outcome) = self
            .inner
            .store
            .get_or_compute_found(
                key,
                move || async move { service.run_conversion(upload, params).await },
                |len| whole(&key, len),
            )
            .await
            .map_err(compute_error)?;
        stats::count_cache_lookup(outcome);
        Ok(FoundConversion {
            key,
            found,
            outcome,
        })
    }

    /// [`Service::audio`], except that for a WAV found on disk (and not in
    /// memory) `whole(len)` is asked first, and if it says false the WAV
    /// comes as a verified reader of its record instead of being read whole.
    pub async fn audio_found(
        &self,
        key: &Key,
        whole: impl FnOnce(u64) -> bool + Send,
    ) -> Option<Found> {
        let (found, _tier) = self.inner.store.get_found(key, whole).await?;
        Some(found)
    }

    /// A verified reader of the disk record of a WAV this instance holds
    /// (see `opusgate_cache::Store::open_value_file`).
    pub async fn audio_file(&self, key: &Key) -> Option<ValueReader> {
        self.inner.store.open_value_file(key).await
    }
}
