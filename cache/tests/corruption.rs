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
    assert_eq!(bytes, record::encode(&key, &original), "documented layout");
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
    assert_eq!(stored, record::encode(&key, &fresh));
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
    let good = record::encode(&keys[0], &value(0, 500));
    let mut bad_version = good.clone();
    bad_version[0] = record::FORMAT_VERSION + 1;
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

/// A whole, well-formed record under the wrong file name: its checksum
/// covers the key it was written for, so it is caught on read, deleted and
/// counted, and the caller computes the right value; the record it was
/// copied from still reads right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_copied_onto_another_keys_path_reads_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let disk_path = config(dir.path(), 0, 0).disk_path;
    let a = Key::derive(b"clip a", b"bound");
    let b = Key::derive(b"clip b", b"bound");
    // Same length, so that the copy also passes the length checks at open.
    let (a_value, b_value) = (value(21, 3000), value(22, 3000));

    // Copied while the store is open (memory tier off: reads go to disk).
    let store = open(dir.path(), 0, MIB).await;
    store.insert(a, a_value.clone()).await;
    store.insert(b, b_value.clone()).await;
    store.flush().await.unwrap();
    assert_eq!(store.get(&b).await, Some((b_value.clone(), Tier::Disk)));
    std::fs::copy(value_path(&disk_path, &a), value_path(&disk_path, &b)).unwrap();
    assert_eq!(store.get(&b).await, None);
    let stats = store.stats();
    assert_eq!(stats.corrupt_records, 1);
    assert_eq!(stats.disk.entries, 1);
    assert_eq!(read_record(dir.path(), &b), None, "the copy is deleted");
    assert_eq!(store.get(&a).await, Some((a_value.clone(), Tier::Disk)));
    // Computed again, and stored under its own key.
    let answer = store
        .get_or_compute(b, {
            let b_value = b_value.clone();
            move || async move { Ok::<_, String>(b_value) }
        })
        .await;
    assert_eq!(answer, Ok((b_value.clone(), Outcome::Miss)));
    store.close().await.unwrap();
    assert_eq!(
        read_record(dir.path(), &b),
        Some(record::encode(&b, &b_value))
    );

    // Copied while the store is stopped, onto an indexed key and onto a
    // key it never wrote (which the open adopts, its framing being right).
    let stranger = Key::derive(b"never written", b"bound");
    std::fs::copy(value_path(&disk_path, &a), value_path(&disk_path, &b)).unwrap();
    std::fs::copy(
        value_path(&disk_path, &a),
        value_path(&disk_path, &stranger),
    )
    .unwrap();
    let store = open(dir.path(), 0, MIB).await;
    let stats = store.stats();
    assert_eq!(stats.corrupt_records, 0, "nothing looks wrong at open");
    assert_eq!(stats.disk.entries, 3);
    assert_eq!(store.get(&b).await, None);
    assert_eq!(store.get(&stranger).await, None);
    let stats = store.stats();
    assert_eq!(stats.corrupt_records, 2);
    assert_eq!(stats.disk.entries, 1);
    assert_eq!(stats.disk.bytes, 3000);
    assert_eq!(stats.hits_disk, 0);
    assert_eq!(read_record(dir.path(), &b), None);
    assert_eq!(read_record(dir.path(), &stranger), None);
    assert_eq!(store.get(&a).await, Some((a_value.clone(), Tier::Disk)));
    store.close().await.unwrap();

    // And after another reopen: gone for good, the original intact.
    let store = open(dir.path(), 0, MIB).await;
    assert_eq!(store.stats().disk.entries, 1);
    assert_eq!(store.get(&b).await, None);
    assert_eq!(store.get(&stranger).await, None);
    assert_eq!(store.get(&a).await, Some((a_value, Tier::Disk)));
    assert_eq!(store.stats().corrupt_records, 0);
    store.close().await.unwrap();
}
