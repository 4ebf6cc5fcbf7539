//! Helpers shared by the integration tests: store configs on temp dirs,
//! deterministic values, a bounded wait, and a gate computations wait on.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opusgate_cache::{Key, Store, StoreConfig, VALUES_DIR};
use tokio::sync::Semaphore;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

pub fn config(dir: &Path, memory_bytes: u64, disk_bytes: u64) -> StoreConfig {
    StoreConfig {
        memory_bytes,
        disk_path: dir.join("db"),
        disk_bytes,
        shared: None,
    }
}

/// A store whose computations fail with a `String`.
pub async fn open(dir: &Path, memory_bytes: u64, disk_bytes: u64) -> Store<String> {
    Store::open(config(dir, memory_bytes, disk_bytes))
        .await
        .expect("open store")
}

/// `len` bytes that differ for every seed and position.
pub fn value(seed: u32, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    Bytes::from(bytes)
}

/// Polls `condition` until it holds; panics after 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A gate computations wait behind, and a count of computations run.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    pub runs: Arc<AtomicUsize>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(0)),
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts one run, then waits until the gate opens.
    pub async fn enter(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let permit = self.permits.acquire().await.expect("gate semaphore open");
        permit.forget();
    }

    pub fn open(&self) {
        self.permits.add_permits(1000);
    }

    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// The keys of the record files in the store at `dir` (see
/// `opusgate_cache::record` for the layout).
pub fn record_files(dir: &Path) -> Vec<Key> {
    let root = config(dir, 0, 0).disk_path.join(VALUES_DIR);
    let mut keys = Vec::new();
    for shard in std::fs::read_dir(root).expect("values directory") {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let name = file.unwrap().file_name();
            let name = name.to_str().expect("file names are hex");
            keys.push(Key::from_hex(name).expect("only record files are left"));
        }
    }
    keys
}
