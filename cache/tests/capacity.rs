//! Capacities are in bytes and are kept: memory by moka's weigher, disk by
//! LRU eviction in the store; evictions are counted per tier.

mod common;

use common::{open, record_files, value, KIB, MIB};
use opusgate_cache::{Key, Tier};

fn key(n: u32) -> Key {
    Key::derive(&n.to_be_bytes(), b"capacity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_capacity_is_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MIB, 64 * MIB).await;
    let len = 200 * KIB as usize;
    for n in 0..10 {
        store.insert(key(n), value(n, len)).await;
    }
    store.run_pending_tasks().await;

    let stats = store.stats();
    // 5 values of 200 KiB fit in 1 MiB, 6 do not.
    assert_eq!(stats.memory.capacity_bytes, MIB);
    assert_eq!(stats.memory.entries, 5);
    assert_eq!(stats.memory.bytes, 5 * 200 * KIB);
    assert!(stats.memory.bytes <= MIB);
    assert_eq!(stats.evictions_memory, 5);
    // Least recently used went first: the last five are in memory.
    for n in 5..10 {
        assert_eq!(
            store.get(&key(n)).await,
            Some((value(n, len), Tier::Memory))
        );
    }
    // The first ones answer from disk, and are promoted back into memory.
    store.flush().await.unwrap();
    assert_eq!(store.get(&key(0)).await, Some((value(0, len), Tier::Disk)));
    assert_eq!(
        store.get(&key(0)).await,
        Some((value(0, len), Tier::Memory))
    );
    store.run_pending_tasks().await;
    let stats = store.stats();
    assert_eq!(stats.memory.entries, 5);
    assert_eq!(stats.evictions_memory, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_larger_than_memory_is_kept_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100 * KIB, 64 * MIB).await;
    store.insert(key(1), value(1, 50 * 1024)).await;
    store.insert(key(2), value(2, 200 * 1024)).await;
    store.flush().await.unwrap();
    let stats = store.stats();
    assert_eq!(
        stats.memory.entries, 1,
        "the big value did not push out the small one"
    );
    assert_eq!(stats.evictions_memory, 0);
    assert_eq!(stats.disk.entries, 2);
    assert_eq!(
        store.get(&key(2)).await,
        Some((value(2, 200 * 1024), Tier::Disk))
    );
    assert_eq!(
        store.get(&key(1)).await,
        Some((value(1, 50 * 1024), Tier::Memory))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_capacity_holds_after_many_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let len = 100 * KIB as usize;
    {
        // Memory off: every value lives on disk only.
        let store = open(dir.path(), 0, MIB).await;
        for n in 0..40 {
            store.insert(key(n), value(n, len)).await;
            assert!(store.stats().disk.bytes <= MIB);
        }
        store.flush().await.unwrap();
        let stats = store.stats();
        // 10 values of 100 KiB fit in 1 MiB, 11 do not.
        assert_eq!(stats.disk.entries, 10);
        assert_eq!(stats.disk.bytes, 10 * 100 * KIB);
        assert_eq!(stats.disk.capacity_bytes, MIB);
        assert_eq!(stats.evictions_disk, 30);
        assert_eq!(stats.disk_write_failures, 0);
        assert_eq!(stats.disk_writes_pending, 0);
        assert!(stats.disk_size_on_disk_bytes > 0);
        assert_eq!(stats.memory.entries, 0);
        // Oldest first (nothing was read): the last ten remain.
        for n in 0..30 {
            assert_eq!(store.get(&key(n)).await, None, "key {n} should be evicted");
        }
        for n in 30..40 {
            assert_eq!(store.get(&key(n)).await, Some((value(n, len), Tier::Disk)));
        }
        store.close().await.unwrap();
    }
    // The files on disk agree with the accounting.
    let mut files = record_files(dir.path());
    files.sort_by_key(|k| k.to_hex());
    let mut expected: Vec<Key> = (30..40).map(key).collect();
    expected.sort_by_key(|k| k.to_hex());
    assert_eq!(files, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_evicts_least_recently_used_not_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let len = 100 * KIB as usize;
    let store = open(dir.path(), 0, MIB).await;
    for n in 0..10 {
        store.insert(key(n), value(n, len)).await;
    }
    store.flush().await.unwrap();
    assert_eq!(store.stats().disk.entries, 10);
    // Reading key 0 makes key 1 the least recently used.
    assert_eq!(store.get(&key(0)).await, Some((value(0, len), Tier::Disk)));
    store.insert(key(10), value(10, len)).await;
    store.flush().await.unwrap();
    assert_eq!(store.stats().evictions_disk, 1);
    assert_eq!(store.get(&key(1)).await, None);
    assert_eq!(store.get(&key(0)).await, Some((value(0, len), Tier::Disk)));
    assert_eq!(
        store.get(&key(10)).await,
        Some((value(10, len), Tier::Disk))
    );

    // The recency survives a restart.
    store.close().await.unwrap();
    let store = open(dir.path(), 0, MIB).await;
    store.insert(key(11), value(11, len)).await;
    store.flush().await.unwrap();
    // Key 2 was the oldest untouched record; keys 0 and 10 stay.
    assert_eq!(store.get(&key(2)).await, None);
    assert!(store.get(&key(0)).await.is_some());
    assert!(store.get(&key(10)).await.is_some());
    assert_eq!(store.stats().disk.entries, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_larger_than_disk_is_not_written_and_shrunk_capacity_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0, MIB).await;
    store.insert(key(1), value(1, 2 * MIB as usize)).await;
    for n in 2..6 {
        store.insert(key(n), value(n, 200 * KIB as usize)).await;
    }
    store.flush().await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.disk.entries, 4);
    assert_eq!(stats.disk.bytes, 800 * KIB);
    assert_eq!(stats.disk_write_failures, 0);
    assert_eq!(stats.evictions_disk, 0);
    assert_eq!(store.get(&key(1)).await, None);
    store.close().await.unwrap();

    // Reopened with half the capacity: the oldest records go at open.
    let store = open(dir.path(), 0, 512 * KIB).await;
    let stats = store.stats();
    assert_eq!(stats.disk.entries, 2);
    assert_eq!(stats.disk.bytes, 400 * KIB);
    assert_eq!(stats.evictions_disk, 2);
    assert_eq!(store.get(&key(2)).await, None);
    assert_eq!(store.get(&key(3)).await, None);
    assert!(store.get(&key(4)).await.is_some());
    assert!(store.get(&key(5)).await.is_some());
}
