//! After a scripted sequence of calls, every counter has its exact value.

mod common;

use bytes::Bytes;
use common::{open, value, wait_until, Gate, KIB, MIB};
use opusgate_cache::{ComputeError, Key, Outcome, StoreStats, Tier, TierStats};

fn key(name: &str) -> Key {
    Key::derive(name.as_bytes(), b"counters")
}

fn ok(v: Bytes) -> impl FnOnce() -> std::future::Ready<Result<Bytes, String>> {
    move || std::future::ready(Ok(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripted_sequence_gives_exact_counters() {
    let dir = tempfile::tempdir().unwrap();
    // Memory holds two 100 KiB values, disk all of them.
    let store = open(dir.path(), 250 * KIB, 10 * MIB).await;
    let len = 100 * KIB as usize;
    let v = |n: u32| value(n, len);

    // 1. k1 computed, then found in memory; a plain get counts nothing.
    assert_eq!(
        store.get_or_compute(key("k1"), ok(v(1))).await,
        Ok((v(1), Outcome::Miss))
    );
    assert_eq!(
        store.get_or_compute(key("k1"), ok(v(99))).await,
        Ok((v(1), Outcome::HitMemory))
    );
    assert_eq!(store.get(&key("k1")).await, Some((v(1), Tier::Memory)));

    // 2. k2 fails once, then succeeds.
    assert_eq!(
        store
            .get_or_compute(key("k2"), || async { Err::<Bytes, _>("bad".to_owned()) })
            .await,
        Err(ComputeError::Failed("bad".to_owned()))
    );
    assert_eq!(
        store.get_or_compute(key("k2"), ok(v(2))).await,
        Ok((v(2), Outcome::Miss))
    );

    // 3. k3 panics once, then succeeds: memory now holds k1, k2, k3 and
    //    evicts the least recently used, k1.
    assert_eq!(
        store
            .get_or_compute(key("k3"), || async {
                if true {
                    panic!("boom");
                }
                Ok::<Bytes, String>(Bytes::new())
            })
            .await,
        Err(ComputeError::Panicked)
    );
    assert_eq!(
        store.get_or_compute(key("k3"), ok(v(3))).await,
        Ok((v(3), Outcome::Miss))
    );
    store.flush().await.unwrap();

    // 4. k1 comes back from disk (and is promoted, evicting k2).
    assert_eq!(
        store.get_or_compute(key("k1"), ok(v(99))).await,
        Ok((v(1), Outcome::HitDisk))
    );
    store.run_pending_tasks().await;

    // 5. Three concurrent callers on k4: one miss, two coalesced.
    let gate = Gate::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = store.clone();
        let gate = gate.clone();
        let value4 = v(4);
        tasks.push(tokio::spawn(async move {
            store
                .get_or_compute(key("k4"), move || async move {
                    gate.enter().await;
                    Ok::<_, String>(value4)
                })
                .await
        }));
    }
    wait_until("2 callers coalesced", || store.stats().coalesced == 2).await;
    gate.open();
    let mut outcomes = Vec::new();
    for task in tasks {
        let (got, outcome) = task.await.unwrap().unwrap();
        assert_eq!(got, v(4));
        outcomes.push(outcome);
    }
    outcomes.sort_by_key(|o| o.as_str());
    assert_eq!(
        outcomes,
        [Outcome::Coalesced, Outcome::Coalesced, Outcome::Miss]
    );

    // 6. A direct insert and a get of an absent key: no lookup counted.
    store.insert(key("k5"), v(5)).await;
    assert_eq!(store.get(&key("absent")).await, None);
    store.flush().await.unwrap();

    let stats = store.stats();
    assert!(stats.disk_size_on_disk_bytes > 0);
    let expected = StoreStats {
        hits_memory: 1,
        hits_disk: 1,
        hits_shared: 0,
        coalesced: 2,
        coalesced_remote: 0,
        misses: 6,
        computations_started: 6,
        computations_failed: 2,
        in_flight: 0,
        // Memory inserts: k1, k2, k3, k1 (promoted), k4, k5; two stay.
        evictions_memory: 4,
        evictions_disk: 0,
        corrupt_records: 0,
        disk_write_failures: 0,
        disk_read_failures: 0,
        disk_writes_pending: 0,
        memory: TierStats {
            entries: 2,
            bytes: 200 * KIB,
            capacity_bytes: 250 * KIB,
        },
        disk: TierStats {
            entries: 5,
            bytes: 500 * KIB,
            capacity_bytes: 10 * MIB,
        },
        disk_enabled: true,
        disk_size_on_disk_bytes: stats.disk_size_on_disk_bytes,
    };
    assert_eq!(stats, expected);
    // The two most recent values are the ones in memory.
    assert_eq!(store.get(&key("k5")).await, Some((v(5), Tier::Memory)));
    assert_eq!(store.get(&key("k4")).await, Some((v(4), Tier::Memory)));
}
