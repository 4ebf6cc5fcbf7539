//! Values flushed before shutdown survive a reopen and answer from disk,
//! then from memory.

mod common;

use bytes::Bytes;
use common::{open, value, KIB, MIB};
use opusgate_cache::{Key, Outcome, Tier};

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
