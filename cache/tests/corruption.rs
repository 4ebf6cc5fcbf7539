//! A record damaged on disk is detected on read, deleted, counted, and
//! never returned: the caller computes a fresh value.

mod common;

use bytes::Bytes;
use common::{config, open, value, Gate, MIB};
use opusgate_cache::record::{self, HEADER_LEN};
use opusgate_cache::{value_path, Key, Outcome, Tier};

/// Replaces the record file of `key` with `bytes`, with the store closed.
fn overwrite_record(dir: &std::path::Path, key: &Key, bytes: &[u8]) {
    let path = value_path(&config(dir, 0, 0).disk_path, key);
    std::fs::write(path, bytes).unwrap();
}

fn read_record(dir: &std::path::Path, key: &Key) -> Option<Vec<u8>> {
    let path = value_path(&config(dir, 0, 0).disk_path, key);
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("read record file: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_detected_removed_counted_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::derive(b"clip", b"corrupt");
    let original = value(1, 4096);
    {
        let store = open(dir.path(), MIB, MIB).await;
        store.insert(key, original.clone()).await;
        store.close().await.unwrap();
    }
    let mut bytes = read_record(dir.path(), &key).expect("record written");
    assert_eq!(bytes, record::encode(&original), "documented layout");
    bytes[HEADER_LEN + 100] ^= 0x40;
    overwrite_record(dir.path(), &key, &bytes);

    let store = open(dir.path(), MIB, MIB).await;
    assert_eq!(store.stats().disk.entries, 1);
    let fresh = value(2, 4096);
    let answer = store
        .get_or_compute(key, {
            let fresh = fresh.clone();
            move || async move { Ok::<_, String>(fresh) }
        })
        .await;
    assert_eq!(answer, Ok((fresh.clone(), Outcome::Miss)));
    let stats = store.stats();
    assert_eq!(stats.corrupt_records, 1);
    assert_eq!(stats.hits_disk, 0);
    assert_eq!(stats.computations_started, 1);
    store.close().await.unwrap();

    // The bad record is gone; the fresh value replaced it, intact.
    let stored = read_record(dir.path(), &key).expect("fresh record written");
    assert_eq!(stored, record::encode(&fresh));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_headers_and_foreign_records_are_rejected_by_get() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Key> = (0..4u32)
        .map(|n| Key::derive(&n.to_be_bytes(), b"headers"))
        .collect();
    {
        let store = open(dir.path(), MIB, MIB).await;
        for (n, key) in keys.iter().enumerate() {
            store.insert(*key, value(n as u32, 500)).await;
        }
        store.close().await.unwrap();
    }
    let good = record::encode(&value(0, 500));
    let mut bad_version = good.clone();
    bad_version[0] = 2;
    let mut bad_length = good.clone();
    bad_length[8] ^= 1;
    let mut bad_digest = good.clone();
    bad_digest[20] ^= 0x80;
    overwrite_record(dir.path(), &keys[0], &bad_version);
    overwrite_record(dir.path(), &keys[1], &bad_length);
    overwrite_record(dir.path(), &keys[2], &bad_digest);
    overwrite_record(dir.path(), &keys[3], b"short");
    // A file under a key the store never wrote (no recency entry), not
    // framed like a record.
    let stranger = Key::derive(b"never written", b"headers");
    overwrite_record(
        dir.path(),
        &stranger,
        b"garbage garbage garbage garbage garbage garbage",
    );

    let store = open(dir.path(), MIB, MIB).await;
    // Found at open, from file lengths and headers alone: the record cut
    // short and the stranger. The other three look whole until read.
    assert_eq!(store.stats().corrupt_records, 2);
    assert_eq!(store.stats().disk.entries, 3);
    for key in keys.iter().chain([&stranger]) {
        assert_eq!(store.get(key).await, None);
    }
    let stats = store.stats();
    assert_eq!(stats.corrupt_records, 5);
    assert_eq!(stats.disk.entries, 0);
    assert_eq!(stats.disk.bytes, 0);
    // Each is counted once: reading again finds nothing to count.
    for key in keys.iter().chain([&stranger]) {
        assert_eq!(store.get(key).await, None);
    }
    assert_eq!(store.stats().corrupt_records, 5);
    store.close().await.unwrap();
    for key in keys.iter().chain([&stranger]) {
        assert_eq!(read_record(dir.path(), key), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_of_a_corrupt_record_count_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::derive(b"clip", b"corrupt-concurrent");
    {
        let store = open(dir.path(), MIB, MIB).await;
        store.insert(key, value(5, 2000)).await;
        store.close().await.unwrap();
    }
    let mut bytes = read_record(dir.path(), &key).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    overwrite_record(dir.path(), &key, &bytes);

    let store = open(dir.path(), MIB, MIB).await;
    let gate = Gate::new();
    let fresh = value(6, 2000);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let gate = gate.clone();
        let fresh = fresh.clone();
        tasks.push(tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<Bytes, String>(fresh)
                })
                .await
        }));
    }
    for task in tasks {
        // Late callers may find the fresh value in memory or in the disk
        // queue; nobody gets the damaged bytes.
        let (got, _outcome) = task.await.unwrap().unwrap();
        assert_eq!(got, fresh);
    }
    assert_eq!(gate.runs(), 1);
    assert_eq!(store.stats().corrupt_records, 1);
    store.flush().await.unwrap();
    assert_eq!(store.get(&key).await, Some((fresh, Tier::Memory)));
}
