//! Damage done to a store on purpose, for fault tests of programs that use
//! this crate. Compiled only with the `test-support` feature (off by
//! default; for dev-dependencies, never for a build that serves).
//!
//! Damaging a value record needs no help: its file is at [`value_path`]
//! (layout in [`crate::record`]). The recency entries live in sled, which
//! callers should not have to open themselves; [`damage_index_entry`] does
//! that.
//!
//! [`value_path`]: crate::value_path

use std::path::Path;
use std::time::Instant;

use crate::disk::{is_lock_busy, OPEN_LOCK_WAIT, SLED_CACHE_BYTES};
use crate::error::StoreError;
use crate::key::Key;
use crate::record::META_TREE;

/// What [`damage_index_entry`] writes in place of a recency entry: 5 bytes,
/// where an entry has [`META_LEN`](crate::record::META_LEN).
const DAMAGED_ENTRY: &[u8] = b"short";

/// Overwrites the recency entry of `key` in the store at `disk_path` (the
/// store's `StoreConfig::disk_path`) with bytes of the wrong length, and
/// flushes sled, as a fault in sled's files could leave it. The next
/// `Store::open` drops the entry and deletes its record, counting one
/// corrupt record.
///
/// Returns whether `key` had an entry; if it had none, nothing is written.
///
/// The store must not be open: sled locks its directory. If another handle
/// still holds the lock (a store closing in this process, or a process
/// exiting), waits up to 5 s for it, as `Store::open` does. Opening a
/// directory that holds no store creates an empty sled database there.
pub fn damage_index_entry(disk_path: &Path, key: &Key) -> Result<bool, StoreError> {
    let db = open_db(disk_path)?;
    let meta = db.open_tree(META_TREE)?;
    if !meta.contains_key(key.as_bytes())? {
        return Ok(false);
    }
    meta.insert(key.as_bytes(), DAMAGED_ENTRY)?;
    db.flush()?;
    Ok(true)
}

fn open_db(disk_path: &Path) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(disk_path)
            .cache_capacity(SLED_CACHE_BYTES)
            .open();
        match opened.map_err(StoreError::from) {
            Ok(db) => return Ok(db),
            Err(error) if is_lock_busy(&error) && started.elapsed() < OPEN_LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Store, StoreConfig, Tier};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_entry_is_dropped_with_its_record_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            memory_bytes: 0,
            disk_path: dir.path().join("db"),
            disk_bytes: 1 << 20,
            shared: None,
        };
        let damaged = Key::derive(b"damaged", b"test-support");
        let kept = Key::derive(b"kept", b"test-support");
        let absent = Key::derive(b"absent", b"test-support");
        let store: Store<String> = Store::open(config.clone()).await.unwrap();
        store.insert(damaged, Bytes::from_static(b"one")).await;
        store.insert(kept, Bytes::from_static(b"two")).await;
        store.close().await.unwrap();

        assert!(damage_index_entry(&config.disk_path, &damaged).unwrap());
        assert!(!damage_index_entry(&config.disk_path, &absent).unwrap());

        let store: Store<String> = Store::open(config).await.unwrap();
        let stats = store.stats();
        assert_eq!(stats.corrupt_records, 1);
        assert_eq!(stats.disk.entries, 1);
        assert_eq!(store.get(&damaged).await, None);
        assert_eq!(
            store.get(&kept).await,
            Some((Bytes::from_static(b"two"), Tier::Disk))
        );
        store.close().await.unwrap();
    }
}
