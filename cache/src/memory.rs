//! The memory tier: a `moka::future::Cache` of `Bytes` weighed by value
//! length, so its capacity is in bytes, with size evictions counted.
//!
//! The eviction policy is plain LRU (moka's `EvictionPolicy::lru()`), not
//! moka's default TinyLFU: TinyLFU may refuse a new entry when the cache is
//! full, while this store promises that a value just computed or promoted
//! from disk answers from memory on the next request.
//!
//! moka enforces the capacity during its maintenance, which it runs on its
//! own every few operations; between two runs the cache can briefly hold
//! more than its capacity, and `entry_count`/`weighted_size` lag behind.
//! `run_pending_tasks` runs the maintenance at once.

use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

use crate::key::Key;
use crate::stats::{bump, Counters, TierStats};

/// The in-memory tier.
#[derive(Clone)]
pub(crate) struct MemoryTier {
    cache: Cache<Key, Bytes>,
    capacity: u64,
}

/// Weight of a value: its length in bytes, at least 1 so that any number of
/// empty values cannot pile up for free, at most `u32::MAX` (moka's limit;
/// such values are refused by [`MemoryTier::fits`] anyway).
fn weight(value: &Bytes) -> u32 {
    u32::try_from(value.len()).unwrap_or(u32::MAX).max(1)
}

impl MemoryTier {
    /// A tier holding at most `capacity` bytes of values. `on_evict` runs
    /// (synchronously, inside moka's maintenance) for every value evicted for
    /// lack of room, after the eviction is counted.
    pub(crate) fn new(
        capacity: u64,
        counters: Arc<Counters>,
        on_evict: impl Fn(Key) + Send + Sync + 'static,
    ) -> MemoryTier {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|_key: &Key, value: &Bytes| weight(value))
            .eviction_listener(move |key: Arc<Key>, _value: Bytes, cause| {
                if cause == RemovalCause::Size {
                    bump(&counters.evictions_memory);
                    on_evict(*key);
                }
            })
            .build();
        MemoryTier { cache, capacity }
    }

    /// Whether a value of `len` bytes may enter this tier at all. A value
    /// larger than the whole capacity is kept out rather than inserted and
    /// evicted at once (which would count as an eviction and evict others).
    pub(crate) fn fits(&self, len: usize) -> bool {
        let weight = (len as u64).max(1);
        weight <= self.capacity && weight <= u64::from(u32::MAX)
    }

    /// The value under `key`, refreshing its recency.
    pub(crate) async fn get(&self, key: &Key) -> Option<Bytes> {
        self.cache.get(key).await
    }

    /// Stores `value` unless it cannot fit; returns whether it was stored.
    pub(crate) async fn insert(&self, key: Key, value: Bytes) -> bool {
        if !self.fits(value.len()) {
            return false;
        }
        self.cache.insert(key, value).await;
        true
    }

    /// Runs moka's pending maintenance (evictions, size accounting) now.
    pub(crate) async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Entries and bytes as moka currently reports them.
    pub(crate) fn stats(&self) -> TierStats {
        TierStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            capacity_bytes: self.capacity,
        }
    }
}
