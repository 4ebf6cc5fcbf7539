//! opusgate-cache: a content-addressed, two-tier (memory over disk) byte
//! store that runs a caller-supplied computation on a miss, once per key
//! however many callers ask at the same time.
//!
//! It knows nothing about audio or HTTP: values are `Bytes` under a
//! [`Key`] (a SHA-256 content address). Lookups go memory
//! (`moka`, capacity in bytes), then disk (one file per value with `sled`
//! as its recency index, capacity in bytes, LRU, every record checksummed),
//! then a computation in progress, then, when a [`SharedTier`] is given, a
//! Redis server or Cluster shared by a fleet of instances (its value, or a
//! fleet-wide lock so that one instance computes while the others wait),
//! then a new computation.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use opusgate_cache::{Key, Store, StoreConfig};
//!
//! // The computations of this store fail with a `String`.
//! let store: Store<String> = Store::open(StoreConfig {
//!     memory_bytes: 256 << 20,
//!     disk_path: "/var/cache/opusgate".into(),
//!     disk_bytes: 8 << 30,
//!     shared: None,
//! })
//! .await?;
//! let input = b"...ogg bytes...";
//! let key = Key::derive(input, b"rate=48000");
//! let (wav, outcome) = store
//!     .get_or_compute(key, || async { Ok::<_, String>(bytes::Bytes::from_static(b"RIFF")) })
//!     .await?;
//! println!("X-Cache: {outcome}, {} bytes", wav.len());
//! store.flush().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A store's computations share one error type `E` ([`Store<E>`]): every
//! caller waiting on a computation that fails gets a clone of its error.
//!
//! Modules: [`key`] (content addresses), `outcome` and `stats` (what the
//! service reports), `memory` (moka tier), `disk`, `files` and `writer`
//! (disk tier: reads, value files, write-back queue, eviction, recovery at
//! open), `disk::reader` (a value read in pieces from its record file,
//! [`ValueReader`], verified whole first, for callers that would rather
//! not hold a large value in memory: [`Store::get_found`],
//! [`Store::get_or_compute_found`], [`Store::open_value_file`]), `tierstate` (what the disk tier's async side and writer thread
//! share, the queued writes among it), `index` (the disk tier's LRU order), `space` (the effective capacity
//! the filesystem allows, and making room on a full one at open),
//! [`record`] (on-disk format), `flight` (single flight), `fleet` (the
//! shared tier on Redis: connection, circuit breaker, value framing, the
//! fleet-wide lease and how a flight goes through it), `store` (the
//! lookup order tying them together), and, with the `test-support` feature,
//! `test_support` (damaging a store on purpose, for fault tests).

#![forbid(unsafe_code)]

mod disk;
mod error;
mod files;
mod fleet;
mod flight;
mod index;
pub mod key;
mod memory;
mod outcome;
mod ratelimit;
pub mod record;
mod space;
mod stats;
mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod tierstate;
mod writer;

pub use disk::reader::{Found, ValueReader, HEAD_BYTES};
pub use fleet::{SharedConfig, SharedError, SharedScope, SharedStats, SharedTier};
pub use key::Key;
pub use record::{value_path, VALUES_DIR};
pub use store::{
    ComputeError, Outcome, Store, StoreConfig, StoreError, StoreStats, Tier, TierStats,
};
