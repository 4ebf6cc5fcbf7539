//! The [`Store`]: the lookup order (memory, then disk, then a computation in
//! progress, then a new computation), the spawned computation task, and the
//! public configuration and stats entry points.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;

use crate::disk::reader::{Found, ValueReader};
use crate::disk::DiskTier;
use crate::fleet::flight::Resolved;
use crate::fleet::SharedScope;
use crate::flight::{FlightResult, Flights, Joined, Publisher, Source};
use crate::key::Key;
use crate::memory::MemoryTier;
use crate::stats::{bump, load, Counters};

pub use crate::error::{ComputeError, StoreError};
pub use crate::outcome::{Outcome, Tier};
pub use crate::stats::{StoreStats, TierStats};

/// Where and how big the tiers are.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Capacity of the memory tier, in bytes of values. 0 disables it.
    pub memory_bytes: u64,
    /// Directory of the disk tier (created if missing): the sled database of
    /// the recency index and, under `values/`, one file per value.
    pub disk_path: PathBuf,
    /// Capacity of the disk tier, in bytes of values (record headers and
    /// sled's own overhead come on top; see `StoreStats::disk_size_on_disk_bytes`).
    /// 0 means nothing is written to disk.
    pub disk_bytes: u64,
    /// The shared tier, for a fleet of instances: looked up after disk,
    /// with a fleet-wide lock around computations. `None`: this instance's
    /// tiers only.
    pub shared: Option<SharedScope>,
}

/// A two-tier (memory over disk) content-addressed byte store with
/// single-flight computation of missing values.
///
/// `E` is the error type of the computations it runs
/// ([`get_or_compute`](Store::get_or_compute)): every caller waiting on a
/// computation that fails gets a clone of its error. A program whose
/// computations fail in different ways opens one store per error type (each
/// with its own `disk_path`).
///
/// Cheap to clone (one `Arc`); every clone is the same store. Needs a tokio
/// runtime (it spawns tasks and blocking reads).
pub struct Store<E> {
    inner: Arc<Inner<E>>,
}

struct Inner<E> {
    memory: MemoryTier,
    disk: DiskTier,
    flights: Arc<Flights<E>>,
    counters: Arc<Counters>,
    shared: Option<SharedScope>,
}

impl<E> Clone for Store<E> {
    fn clone(&self) -> Self {
        Store {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E> fmt::Debug for Store<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<E> Store<E> {
    /// Opens (creating if missing) the disk tier at `disk_path`, rebuilds
    /// the disk tier's byte and entry accounting from its recency tree and
    /// the value files (repairing what an unclean stop left, and evicting
    /// down to `disk_bytes` if the capacity shrank), and starts the disk
    /// writer thread. Disk I/O runs off the async threads.
    ///
    /// If another handle still holds sled's lock on the directory (a store
    /// being dropped in this process, or a previous process exiting), waits
    /// up to 5 s for it.
    ///
    /// The disk tier's effective capacity is at most `disk_bytes` and at
    /// most what its filesystem can hold: the store's files plus the free
    /// space, less a headroom of 5 % of the filesystem (at most 64 MiB),
    /// measured here (logged when lower; reported as
    /// `StoreStats::disk.capacity_bytes`). On a filesystem so full that the
    /// disk tier cannot open, least recently used value files are deleted
    /// until it does; if it still cannot, the store opens with the disk tier
    /// disabled (`StoreStats::disk_enabled` false, memory only) instead of
    /// failing.
    pub async fn open(config: StoreConfig) -> Result<Store<E>, StoreError> {
        if config.disk_path.as_os_str().is_empty() {
            return Err(StoreError::Config("disk_path is empty".to_owned()));
        }
        let counters = Arc::new(Counters::default());
        let disk = DiskTier::open(
            config.disk_path.clone(),
            config.disk_bytes,
            Arc::clone(&counters),
        )
        .await?;
        let memory = MemoryTier::new(config.memory_bytes, Arc::clone(&counters), disk.toucher());
        Ok(Store {
            inner: Arc::new(Inner {
                memory,
                disk,
                flights: Arc::new(Flights::default()),
                counters,
                shared: config.shared,
            }),
        })
    }

    /// The value under `key` and the tier that answered, without computing.
    ///
    /// Not a lookup for the outcome counters. A disk hit is promoted into
    /// memory. A corrupt disk record is deleted and counted, and reads as
    /// absent. A value whose disk write is still queued answers as `Disk`.
    pub async fn get(&self, key: &Key) -> Option<(Bytes, Tier)> {
        let inner = &self.inner;
        if let Some(value) = inner.memory.get(key).await {
            return Some((value, Tier::Memory));
        }
        if let Some(value) = inner.disk_lookup(key).await {
            return Some((value, Tier::Disk));
        }
        let value = inner.shared.as_ref()?.lookup(key).await?;
        inner.store_value(*key, value.clone()).await;
        Some((value, Tier::Shared))
    }

    /// The value under `key`, computing it with `compute` if no tier has it.
    ///
    /// Order: memory, disk, a computation already in progress for `key` in
    /// this instance (this caller waits for it: [`Outcome::Coalesced`]),
    /// else a flight: with a shared tier, its value
    /// ([`Outcome::HitShared`]) or another instance's computation under the
    /// fleet-wide lock ([`Outcome::CoalescedRemote`]); else a computation
    /// here ([`Outcome::Miss`]). A value from the shared tier is copied into
    /// memory and disk. The computation runs in its own tokio
    /// task: if this caller's future is dropped, it still finishes, its value
    /// is stored and the other waiters get it. Concurrent callers for one
    /// key run `compute` once between them.
    ///
    /// A successful value is in memory before any caller gets it (so the
    /// next request hits memory) and is written to disk in the background.
    /// An error reaches every caller waiting at that moment and is not
    /// stored; the next call computes again. A panic in `compute` becomes
    /// [`ComputeError::Panicked`] for every waiter.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: Key,
        compute: F,
    ) -> Result<(Bytes, Outcome), ComputeError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let counters = &inner.counters;
        let (publisher, waiter) = loop {
            if let Some(value) = inner.memory.get(&key).await {
                bump(&counters.hits_memory);
                return Ok((value, Outcome::HitMemory));
            }
            if let Some(value) = inner.disk_lookup(&key).await {
                bump(&counters.hits_disk);
                return Ok((value, Outcome::HitDisk));
            }
            match inner.flights.join(key) {
                Joined::Waiter(waiter) => {
                    // Counted on joining, so a waiter whose future is dropped
                    // still counts; undone below if the flight ended without
                    // a result (its task was dropped), and then it looks again.
                    bump(&counters.coalesced);
                    match waiter.wait().await {
                        Some(FlightResult::Value(value, _)) => {
                            return Ok((value, Outcome::Coalesced))
                        }
                        Some(FlightResult::Failed(error)) => {
                            return Err(ComputeError::Failed(error))
                        }
                        Some(FlightResult::Panicked) => return Err(ComputeError::Panicked),
                        None => {}
                    }
                    counters.coalesced.fetch_sub(1, Ordering::Relaxed);
                }
                Joined::Leader(publisher, waiter) => break (publisher, waiter),
            }
        };
        // No await between taking the slot and spawning: the flight cannot
        // be orphaned by this future being dropped.
        tokio::spawn(run_flight(Arc::clone(inner), publisher, compute));
        match waiter.wait().await {
            Some(FlightResult::Value(value, source)) => Ok((value, leader_outcome(source))),
            Some(FlightResult::Failed(error)) => Err(ComputeError::Failed(error)),
            Some(FlightResult::Panicked) | None => Err(ComputeError::Panicked),
        }
    }

    /// The value of `key` if the memory tier holds it, counted as a memory
    /// hit: the first look of [`get_or_compute`](Store::get_or_compute), for
    /// a caller that would answer a hit before doing anything else (such as
    /// copying its input so that it can be held for a computation).
    pub async fn get_memory(&self, key: &Key) -> Option<Bytes> {
        let value = self.inner.memory.get(key).await?;
        bump(&self.inner.counters.hits_memory);
        Some(value)
    }

    /// Like [`get_or_compute`](Store::get_or_compute), for a caller that
    /// would rather not hold a large value in memory: for a value that is
    /// not in memory but on disk, `whole` is asked with its length first,
    /// and if it answers false the value comes as a verified reader of its
    /// record file ([`Found::File`], [`Outcome::HitDisk`], not promoted into
    /// memory) instead of being read whole. Everything else (`whole` said
    /// true, or the value was elsewhere or nowhere) is `get_or_compute`'s,
    /// as [`Found::Value`]. `whole` is asked at most once, so that a caller
    /// can reserve the memory when it says true. (A disk hit found by a
    /// flight's own second look is read whole without asking.)
    pub async fn get_or_compute_found<F, Fut>(
        &self,
        key: Key,
        compute: F,
        whole: impl FnOnce(u64) -> bool + Send,
    ) -> Result<(Found, Outcome), ComputeError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        // Memory first, and only once on a hit (the hot path).
        if let Some(value) = self.get_memory(&key).await {
            return Ok((Found::Value(value), Outcome::HitMemory));
        }
        if let Some(reader) = self.inner.disk.large_record(&key, whole).await {
            bump(&self.inner.counters.hits_disk);
            return Ok((Found::File(reader), Outcome::HitDisk));
        }
        let (value, outcome) = self.get_or_compute(key, compute).await?;
        Ok((Found::Value(value), outcome))
    }

    /// Like [`get`](Store::get), with
    /// [`get_or_compute_found`](Store::get_or_compute_found)'s question
    /// `whole` for a value on disk (not in memory): false makes it a
    /// verified reader of its file ([`Tier::Disk`], not promoted).
    pub async fn get_found(
        &self,
        key: &Key,
        whole: impl FnOnce(u64) -> bool + Send,
    ) -> Option<(Found, Tier)> {
        if let Some(value) = self.inner.memory.get(key).await {
            return Some((Found::Value(value), Tier::Memory));
        }
        if let Some(reader) = self.inner.disk.large_record(key, whole).await {
            return Some((Found::File(reader), Tier::Disk));
        }
        let (value, tier) = self.get(key).await?;
        Some((Found::Value(value), tier))
    }

    /// A verified reader of the disk record of `key` (see [`ValueReader`]),
    /// for a caller that holds the value (just computed, say) but would
    /// rather send it from disk than keep it in memory. A write of it still
    /// queued is waited for first. `None` if there is no record: the disk
    /// tier is disabled, the value was not written (larger than the disk
    /// capacity, or the write failed) or was evicted since, or the record
    /// is corrupt (then deleted and counted, as on any read).
    pub async fn open_value_file(&self, key: &Key) -> Option<ValueReader> {
        self.inner.disk.value_file(key).await
    }

    /// Stores `value` under `key` in memory now and on disk in the
    /// background, for callers that computed it elsewhere.
    pub async fn insert(&self, key: Key, value: Bytes) {
        self.inner.store_value(key, value).await;
    }

    /// A snapshot of the counters and gauges. Cheap and non-blocking; see
    /// [`StoreStats`] for how exact each figure is.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            hits_memory: load(&c.hits_memory),
            hits_disk: load(&c.hits_disk),
            hits_shared: load(&c.hits_shared),
            coalesced: load(&c.coalesced),
            coalesced_remote: load(&c.coalesced_remote),
            misses: load(&c.misses),
            computations_started: load(&c.computations_started),
            computations_failed: load(&c.computations_failed),
            in_flight: self.inner.flights.len(),
            evictions_memory: load(&c.evictions_memory),
            evictions_disk: load(&c.evictions_disk),
            corrupt_records: load(&c.corrupt_records),
            disk_write_failures: load(&c.disk_write_failures),
            disk_read_failures: load(&c.disk_read_failures),
            disk_writes_pending: self.inner.disk.pending_writes(),
            memory: self.inner.memory.stats(),
            disk: TierStats {
                entries: load(&c.disk_entries),
                bytes: load(&c.disk_bytes),
                capacity_bytes: self.inner.disk.capacity(),
            },
            disk_enabled: self.inner.disk.enabled(),
            disk_size_on_disk_bytes: load(&c.disk_size_on_disk),
        }
    }

    /// Runs the memory tier's pending maintenance (size evictions and its
    /// entry/byte figures) now, so that `stats().memory` is exact.
    pub async fn run_pending_tasks(&self) {
        self.inner.memory.run_pending_tasks().await;
    }

    /// Waits for every disk write queued before this call, then makes the
    /// disk tier durable (fsync of the files written and of sled). Also runs the memory
    /// tier's pending maintenance. Call it on shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.memory.run_pending_tasks().await;
        self.inner.disk.flush().await
    }

    /// Flushes, then, if this is the last handle to the store, waits until
    /// the disk writer thread has dropped its database handles. With other
    /// handles still alive it only flushes; the database closes when the
    /// last one is dropped.
    ///
    /// sled's own background I/O threads may hold the directory's lock for a
    /// few more milliseconds; [`Store::open`] waits for that.
    pub async fn close(self) -> Result<(), StoreError> {
        self.flush().await?;
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let exited = inner.disk.take_exit_signal();
            drop(inner);
            if let Some(exited) = exited {
                let _ = exited.await;
            }
        }
        Ok(())
    }
}

impl<E> Inner<E> {
    /// Disk lookup with promotion of a hit into memory.
    async fn disk_lookup(&self, key: &Key) -> Option<Bytes> {
        let value = self.disk.get(key).await?;
        self.memory.insert(*key, value.clone()).await;
        Some(value)
    }

    /// Memory now, disk in the background.
    async fn store_value(&self, key: Key, value: Bytes) {
        self.memory.insert(key, value.clone()).await;
        self.disk.enqueue_write(key, value);
    }
}

fn leader_outcome(source: Source) -> Outcome {
    match source {
        Source::Computed => Outcome::Miss,
        Source::Memory => Outcome::HitMemory,
        Source::Disk => Outcome::HitDisk,
        Source::Shared => Outcome::HitShared,
        Source::Remote => Outcome::CoalescedRemote,
    }
}

/// The body of a flight's task: look once more (a flight for the key may
/// have finished between the leader's own lookups and its taking the
/// slot), else resolve it through the shared tier or compute it here, store
/// and publish.
async fn run_flight<F, Fut, E>(inner: Arc<Inner<E>>, publisher: Publisher<E>, compute: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let key = publisher.key();
    let counters = &inner.counters;
    if let Some(value) = inner.memory.get(&key).await {
        bump(&counters.hits_memory);
        publisher.publish(FlightResult::Value(value, Source::Memory));
        return;
    }
    if let Some(value) = inner.disk_lookup(&key).await {
        bump(&counters.hits_disk);
        publisher.publish(FlightResult::Value(value, Source::Disk));
        return;
    }
    // Counted when the computation starts, which with a shared tier only
    // happens if the fleet has neither the value nor a computation of it.
    let computation = async {
        bump(&counters.misses);
        bump(&counters.computations_started);
        AssertUnwindSafe(async move { compute().await })
            .catch_unwind()
            .await
    };
    let resolved = match &inner.shared {
        Some(shared) => {
            shared
                .resolve(&key, computation, |outcome| match outcome {
                    Ok(Ok(value)) => Some(value),
                    _ => None,
                })
                .await
        }
        None => Resolved::Computed(computation.await),
    };
    let result = match resolved {
        Resolved::Shared(value) => {
            bump(&counters.hits_shared);
            inner.store_value(key, value.clone()).await;
            FlightResult::Value(value, Source::Shared)
        }
        Resolved::Remote(value) => {
            bump(&counters.coalesced_remote);
            inner.store_value(key, value.clone()).await;
            FlightResult::Value(value, Source::Remote)
        }
        Resolved::Computed(Ok(Ok(value))) => {
            inner.store_value(key, value.clone()).await;
            FlightResult::Value(value, Source::Computed)
        }
        Resolved::Computed(Ok(Err(error))) => {
            bump(&counters.computations_failed);
            FlightResult::Failed(error)
        }
        Resolved::Computed(Err(panic)) => {
            bump(&counters.computations_failed);
            tracing::warn!(
                %key,
                panic = panic_message(panic.as_ref()),
                "opusgate-cache: computation panicked"
            );
            FlightResult::Panicked
        }
    };
    publisher.publish(result);
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "non-string panic payload"
    }
}
