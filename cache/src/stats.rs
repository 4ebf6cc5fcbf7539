//! Counters and gauges: the public snapshot types [`StoreStats`] and
//! [`TierStats`], and the shared atomic [`Counters`] the other modules bump.

use std::sync::atomic::{AtomicU64, Ordering};

/// Entries and bytes held by one tier, against its capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Number of values held.
    pub entries: u64,
    /// Sum of the values' lengths in bytes (record headers and index
    /// overhead are not included; the memory tier weighs an empty value as
    /// 1 byte so that empty values cannot pile up for free).
    pub bytes: u64,
    /// The capacity in bytes: for memory the configured one, for disk the
    /// effective one set at open (the configured one, lowered to what the
    /// filesystem can hold; 0 while the disk tier is disabled).
    pub capacity_bytes: u64,
}

/// A snapshot of the store's counters and gauges.
///
/// Counters only grow for the life of a [`Store`](crate::Store) (they start
/// at zero on every `open`); gauges (`in_flight`, `disk_writes_pending`, the
/// tier stats and `disk_size_on_disk_bytes`) describe the moment.
///
/// Every `get_or_compute` call bumps exactly one of `hits_memory`,
/// `hits_disk`, `hits_shared`, `coalesced`, `coalesced_remote` and `misses`,
/// also when it ends in an error (`misses` for the caller whose call ran the
/// computation in this instance, `coalesced` for the callers that waited
/// for it), and also when the caller's future is dropped after joining or
/// starting a flight. Plain `get` calls are not lookups and bump none of
/// them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `get_or_compute` calls answered by the memory tier.
    pub hits_memory: u64,
    /// `get_or_compute` calls answered by the disk tier.
    pub hits_disk: u64,
    /// `get_or_compute` calls answered by the shared tier.
    pub hits_shared: u64,
    /// `get_or_compute` calls that waited for a computation another call
    /// of this instance started.
    pub coalesced: u64,
    /// `get_or_compute` calls that waited for another instance's
    /// computation (it held the fleet-wide lock).
    pub coalesced_remote: u64,
    /// `get_or_compute` calls for which this instance ran the computation.
    pub misses: u64,
    /// Computations started (equals `misses`).
    pub computations_started: u64,
    /// Computations that returned an error or panicked.
    pub computations_failed: u64,
    /// Computations running right now.
    pub in_flight: u64,
    /// Values evicted from memory because of its byte capacity.
    pub evictions_memory: u64,
    /// Records evicted from disk because of its byte capacity.
    pub evictions_disk: u64,
    /// Disk records that failed their header or checksum check and were
    /// deleted (each record is counted once, however many readers saw it).
    pub corrupt_records: u64,
    /// Disk writes that did not happen: file or sled errors (e.g. disk full),
    /// recency updates that failed, and writes dropped because the write-back
    /// queue was full. The value still answers from memory.
    pub disk_write_failures: u64,
    /// Disk reads that failed with an I/O error (answered as a disk miss).
    pub disk_read_failures: u64,
    /// Values waiting in the write-back queue to be written to disk.
    pub disk_writes_pending: u64,
    /// The memory tier. `entries` and `bytes` are moka's own figures, which
    /// lag behind inserts until moka's next maintenance; they are exact right
    /// after [`Store::run_pending_tasks`](crate::Store::run_pending_tasks) or
    /// [`Store::flush`](crate::Store::flush).
    pub memory: TierStats,
    /// The disk tier: logical bytes (sum of value lengths) of the records
    /// that are written, kept exactly.
    pub disk: TierStats,
    /// Whether the disk tier is in use. `false` when it could not be opened
    /// (a filesystem full even after deleting every value file): the store
    /// then runs on memory only until the next open.
    pub disk_enabled: bool,
    /// The disk tier's size on disk: the value files (values plus their
    /// 41-byte headers) and sled's own files for the recency index
    /// (`Db::size_on_disk`, with garbage sled has not reclaimed yet), so it
    /// is always larger than `disk.bytes`. Refreshed by the writer thread after writes (at most
    /// every 250 ms) and on every flush.
    pub disk_size_on_disk_bytes: u64,
}

/// The shared atomic counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hits_memory: AtomicU64,
    pub hits_disk: AtomicU64,
    pub hits_shared: AtomicU64,
    pub coalesced: AtomicU64,
    pub coalesced_remote: AtomicU64,
    pub misses: AtomicU64,
    pub computations_started: AtomicU64,
    pub computations_failed: AtomicU64,
    pub evictions_memory: AtomicU64,
    pub evictions_disk: AtomicU64,
    pub corrupt_records: AtomicU64,
    pub disk_write_failures: AtomicU64,
    pub disk_read_failures: AtomicU64,
    pub disk_entries: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub disk_size_on_disk: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub(crate) fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Sets a gauge.
pub(crate) fn set(counter: &AtomicU64, value: u64) {
    counter.store(value, Ordering::Relaxed);
}
