//! Values flushed before shutdown survive a reopen and answer from disk,
//! then from memory.

mod common;

use bytes::Bytes;
use common::{open, value, KIB, MIB};
use opusgate_cache::record;
use opusgate_cache::{value_path, Key, Outcome, Tier};

fn must_not_run() -> std::future::Ready<Result<Bytes, String>> {
    std::future::ready(Err("the value should have been found".to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_flush_hits_disk_then_memory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Key::derive(b"first clip", b"p");
    let second = Key::derive(b"second clip", b"p");
    let first_value = value(10, 320 * KIB as usize);
    let second_value = value(11, 32 * KIB as usize);
    {
        let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
        let answer = store
            .get_or_compute(first, {
                let v = first_value.clone();
                move || async move { Ok::<_, String>(v) }
            })
            .await;
        assert_eq!(answer, Ok((first_value.clone(), Outcome::Miss)));
        store.insert(second, second_value.clone()).await;
        store.flush().await.unwrap();
        // Dropped, not closed: reopening must wait for sled's lock itself.
    }

    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let stats = store.stats();
    assert_eq!(stats.disk.entries, 2);
    assert_eq!(
        stats.disk.bytes,
        (first_value.len() + second_value.len()) as u64
    );
    assert_eq!(stats.memory.entries, 0);

    let answer = store.get_or_compute(first, must_not_run).await;
    assert_eq!(answer, Ok((first_value.clone(), Outcome::HitDisk)));
    let answer = store.get_or_compute(first, must_not_run).await;
    assert_eq!(answer, Ok((first_value, Outcome::HitMemory)));

    assert_eq!(
        store.get(&second).await,
        Some((second_value.clone(), Tier::Disk))
    );
    assert_eq!(store.get(&second).await, Some((second_value, Tier::Memory)));

    let stats = store.stats();
    assert_eq!((stats.hits_disk, stats.hits_memory), (1, 1));
    assert_eq!(stats.computations_started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_then_reopen_many_times() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5u32 {
        let store = open(dir.path(), MIB, 8 * MIB).await;
        assert_eq!(store.stats().disk.entries, u64::from(round));
        for earlier in 0..round {
            let key = Key::derive(&earlier.to_be_bytes(), b"rounds");
            assert_eq!(
                store.get(&key).await,
                Some((value(earlier, 1000), Tier::Disk))
            );
        }
        let key = Key::derive(&round.to_be_bytes(), b"rounds");
        store.insert(key, value(round, 1000)).await;
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_write_answers_before_it_reaches_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Memory off, so the only copy is in the write-back queue or on disk.
    let store = open(dir.path(), 0, 64 * MIB).await;
    let key = Key::derive(b"clip", b"queued");
    for n in 0..20u32 {
        store
            .insert(
                Key::derive(&n.to_be_bytes(), b"filler"),
                value(n, 256 * 1024),
            )
            .await;
    }
    store.insert(key, value(99, 1000)).await;
    // Whether still queued or already written, it is found as a disk value.
    assert_eq!(store.get(&key).await, Some((value(99, 1000), Tier::Disk)));
    store.flush().await.unwrap();
    assert_eq!(store.stats().disk_writes_pending, 0);
    assert_eq!(store.stats().disk.entries, 21);
}

/// What `kill -9` can leave, made by hand: a record file whose recency entry
/// was lost (adopted), an entry whose file was already removed (dropped), a
/// half-written temporary file (removed). The accounting comes out exact
/// and survives the next reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_repairs_what_an_unclean_stop_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let disk_path = common::config(dir.path(), 0, 0).disk_path;
    let keys: Vec<Key> = (0..3u32)
        .map(|n| Key::derive(&n.to_be_bytes(), b"unclean"))
        .collect();
    {
        let store = open(dir.path(), MIB, 8 * MIB).await;
        for (n, key) in keys.iter().enumerate() {
            store.insert(*key, value(n as u32, 1000 + n)).await;
        }
        store.close().await.unwrap();
    }
    // An eviction whose entry removal never reached sled.
    std::fs::remove_file(value_path(&disk_path, &keys[0])).unwrap();
    // A write whose entry never reached sled.
    let orphan = Key::derive(b"orphan", b"unclean");
    let orphan_value = value(7, 5000);
    std::fs::write(
        value_path(&disk_path, &orphan),
        record::encode(&orphan, &orphan_value),
    )
    .unwrap();
    // A write interrupted before its rename.
    let mut tmp = value_path(&disk_path, &keys[1]).into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, b"half a rec").unwrap();

    for reopen in 0..2 {
        let store = open(dir.path(), 0, 8 * MIB).await;
        let stats = store.stats();
        assert_eq!(stats.disk.entries, 3, "reopen {reopen}");
        assert_eq!(stats.disk.bytes, 1001 + 1002 + 5000, "reopen {reopen}");
        assert_eq!(stats.corrupt_records, 0);
        assert_eq!(store.get(&keys[0]).await, None);
        assert_eq!(
            store.get(&orphan).await,
            Some((orphan_value.clone(), Tier::Disk))
        );
        for (n, key) in keys.iter().enumerate().skip(1) {
            assert_eq!(
                store.get(key).await,
                Some((value(n as u32, 1000 + n), Tier::Disk))
            );
        }
        store.close().await.unwrap();
        assert!(!std::path::Path::new(&tmp).exists());
    }
}

/// A format 1 record, built by hand: version 1, the value's length (u64
/// big-endian), SHA-256 of the value alone, the value.
fn format_1_record(value: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut record = vec![1u8];
    record.extend_from_slice(&(value.len() as u64).to_be_bytes());
    record.extend_from_slice(&Sha256::digest(value));
    record.extend_from_slice(value);
    record
}

/// A cache written by a version of format 1 (its recency tree and record
/// files, made by hand) is dropped at open: every record deleted with its
/// entry, none counted as corrupt, and the store works from a cold disk
/// tier, also after the next reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_cache_starts_cold_after_the_upgrade() {
    const FORMAT_1_META_TREE: &str = "opusgate-cache.meta.v1";
    let dir = tempfile::tempdir().unwrap();
    let disk_path = common::config(dir.path(), 0, 0).disk_path;
    let keys: Vec<Key> = (0..3u32)
        .map(|n| Key::derive(&n.to_be_bytes(), b"format 1"))
        .collect();
    {
        let db = sled::Config::new().path(&disk_path).open().unwrap();
        let meta = db.open_tree(FORMAT_1_META_TREE).unwrap();
        for (n, key) in keys.iter().enumerate() {
            let value = value(n as u32, 1000);
            let path = value_path(&disk_path, key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format_1_record(&value)).unwrap();
            // A recency entry: sequence, value length (u64 big-endian each).
            let mut entry = (n as u64 + 1).to_be_bytes().to_vec();
            entry.extend_from_slice(&(value.len() as u64).to_be_bytes());
            meta.insert(key.as_bytes(), entry).unwrap();
        }
        db.flush().unwrap();
    }

    let store = open(dir.path(), 0, 8 * MIB).await;
    let stats = store.stats();
    assert_eq!(stats.disk.entries, 0);
    assert_eq!(stats.disk.bytes, 0);
    assert_eq!(stats.corrupt_records, 0, "outdated, not corrupt");
    assert_eq!(common::record_files(dir.path()), Vec::<Key>::new());
    for key in &keys {
        assert_eq!(store.get(key).await, None);
    }
    store.insert(keys[0], value(50, 2000)).await;
    store.close().await.unwrap();
    {
        let db = sled::Config::new().path(&disk_path).open().unwrap();
        assert!(
            !db.tree_names()
                .iter()
                .any(|name| name == FORMAT_1_META_TREE.as_bytes()),
            "the format 1 recency tree is dropped"
        );
    }

    let store = open(dir.path(), 0, 8 * MIB).await;
    let stats = store.stats();
    assert_eq!(stats.disk.entries, 1);
    assert_eq!(stats.disk.bytes, 2000);
    assert_eq!(stats.corrupt_records, 0);
    assert_eq!(
        store.get(&keys[0]).await,
        Some((value(50, 2000), Tier::Disk))
    );
    store.close().await.unwrap();
}

/// In a store of the current format, a format 1 record planted with no
/// recency entry is dropped at open, not counted as corrupt; one planted
/// over an indexed record of the same length looks whole at open and is
/// caught on read like any record that should not be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_format_1_record_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let disk_path = common::config(dir.path(), 0, 0).disk_path;
    let kept = Key::derive(b"kept", b"planted");
    let overwritten = Key::derive(b"overwritten", b"planted");
    let planted = Key::derive(b"planted", b"planted");
    {
        let store = open(dir.path(), 0, 8 * MIB).await;
        store.insert(kept, value(1, 1000)).await;
        store.insert(overwritten, value(2, 1000)).await;
        store.close().await.unwrap();
    }
    std::fs::write(
        value_path(&disk_path, &planted),
        format_1_record(&value(3, 1000)),
    )
    .unwrap();
    std::fs::write(
        value_path(&disk_path, &overwritten),
        format_1_record(&value(2, 1000)),
    )
    .unwrap();

    let store = open(dir.path(), 0, 8 * MIB).await;
    let stats = store.stats();
    assert_eq!(stats.corrupt_records, 0);
    assert_eq!(stats.disk.entries, 2, "the unindexed one is dropped");
    assert!(!value_path(&disk_path, &planted).exists());
    assert_eq!(store.get(&planted).await, None);
    assert_eq!(store.get(&overwritten).await, None);
    assert_eq!(store.stats().corrupt_records, 1);
    assert!(!value_path(&disk_path, &overwritten).exists());
    assert_eq!(store.get(&kept).await, Some((value(1, 1000), Tier::Disk)));
    assert_eq!(store.stats().disk.entries, 1);
    store.close().await.unwrap();
}
