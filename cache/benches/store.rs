//! Store benchmarks: latency of a memory hit and of a disk hit for 32 KiB,
//! 320 KiB and 2 MiB values, and throughput of 50 concurrent callers on one
//! hot key, on 1000 distinct keys, and on a fresh key each time (single
//! flight: one computation, 49 waiters); and the time to open (and close) a
//! store holding 13,000 records, as many 320 KiB WAVs as the default 4 GiB
//! disk tier holds (the open lists and checks every record file).
//!
//! Run: `cargo bench -p opusgate-cache --bench store`
//! (warm-up 1 s and measurement 3 s per benchmark are set below; criterion's
//! `--warm-up-time`/`--measurement-time` flags override them).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opusgate_cache::{Key, Outcome, Store, StoreConfig};
use tokio::runtime::Runtime;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const CALLERS: usize = 50;
const LOOKUPS_PER_CALLER: usize = 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A store whose computations (only ever run by mistake here) fail with a
/// `String`.
fn open(rt: &Runtime, dir: &Path, memory_bytes: usize, disk_bytes: usize) -> Store<String> {
    rt.block_on(Store::open(StoreConfig {
        memory_bytes: memory_bytes as u64,
        disk_path: dir.to_path_buf(),
        disk_bytes: disk_bytes as u64,
        shared: None,
    }))
    .expect("open store")
}

fn value(len: usize, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>())
}

fn key(n: u64, tag: &[u8]) -> Key {
    Key::derive(&n.to_be_bytes(), tag)
}

/// A computation that must not run (the benchmarks that use it only hit).
fn unreachable_compute() -> std::future::Ready<Result<Bytes, String>> {
    std::future::ready(Err("benchmark expected a hit".to_owned()))
}

fn expect_hit(result: Result<(Bytes, Outcome), opusgate_cache::ComputeError<String>>) -> Bytes {
    match result {
        Ok((value, Outcome::HitMemory | Outcome::HitDisk)) => value,
        Ok((_, outcome)) => panic!("expected a hit, got {outcome}"),
        Err(error) => panic!("expected a hit, got {error}"),
    }
}

fn hit_latency(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    // Memory large enough for every value; disk store with memory off so
    // that every lookup reads, verifies and returns the record file.
    let memory_store = open(&rt, &dir.path().join("memory"), 64 * MIB, 64 * MIB);
    let disk_store = open(&rt, &dir.path().join("disk"), 0, 64 * MIB);

    let mut group = c.benchmark_group("hit");
    for (label, len) in [
        ("32KiB", 32 * KIB),
        ("320KiB", 320 * KIB),
        ("2MiB", 2 * MIB),
    ] {
        let k = key(len as u64, b"latency");
        let v = value(len, 7);
        rt.block_on(async {
            memory_store.insert(k, v.clone()).await;
            disk_store.insert(k, v.clone()).await;
            memory_store.flush().await.expect("flush");
            disk_store.flush().await.expect("flush");
        });
        assert_eq!(
            rt.block_on(memory_store.get_or_compute(k, unreachable_compute)),
            Ok((v.clone(), Outcome::HitMemory))
        );
        assert_eq!(
            rt.block_on(disk_store.get_or_compute(k, unreachable_compute)),
            Ok((v.clone(), Outcome::HitDisk))
        );

        group.bench_with_input(BenchmarkId::new("memory", label), &k, |b, k| {
            b.to_async(&rt).iter(|| async {
                expect_hit(memory_store.get_or_compute(*k, unreachable_compute).await)
            })
        });
        group.bench_with_input(BenchmarkId::new("disk", label), &k, |b, k| {
            b.to_async(&rt).iter(|| async {
                expect_hit(disk_store.get_or_compute(*k, unreachable_compute).await)
            })
        });
    }
    group.finish();
}

/// 50 tasks doing 20 lookups each; `key_of(caller, i)` picks the key.
async fn fifty_callers(store: &Store<String>, key_of: fn(usize, usize) -> Key) {
    let mut tasks = Vec::with_capacity(CALLERS);
    for caller in 0..CALLERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..LOOKUPS_PER_CALLER {
                expect_hit(
                    store
                        .get_or_compute(key_of(caller, i), unreachable_compute)
                        .await,
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller task");
    }
}

fn hot_key(_caller: usize, _i: usize) -> Key {
    key(0, b"hot")
}

fn distinct_key(caller: usize, i: usize) -> Key {
    key((i * CALLERS + caller) as u64, b"distinct")
}

fn concurrent_throughput(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&rt, &dir.path().join("concurrent"), 64 * MIB, 64 * MIB);
    rt.block_on(async {
        store.insert(hot_key(0, 0), value(32 * KIB, 1)).await;
        for n in 0..(CALLERS * LOOKUPS_PER_CALLER) as u64 {
            store
                .insert(key(n, b"distinct"), value(32 * KIB, n as u8))
                .await;
        }
        store.flush().await.expect("flush");
    });
    assert_eq!(store.stats().memory.entries, 1001);

    let mut group = c.benchmark_group("concurrent_50_callers");
    group.throughput(Throughput::Elements((CALLERS * LOOKUPS_PER_CALLER) as u64));
    group.bench_function("hot_key_memory_hits", |b| {
        b.to_async(&rt).iter(|| fifty_callers(&store, hot_key))
    });
    group.bench_function("1000_distinct_keys_memory_hits", |b| {
        b.to_async(&rt).iter(|| fifty_callers(&store, distinct_key))
    });

    // Single flight on a fresh key each iteration: 50 callers, one trivial
    // computation. Disk off (capacity 0) to time the coordination alone.
    let flight_store = open(&rt, &dir.path().join("flight"), 64 * MIB, 0);
    let next_key = Arc::new(AtomicU64::new(0));
    let payload = value(32 * KIB, 3);
    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("fresh_key_single_flight", |b| {
        b.to_async(&rt).iter(|| {
            let k = key(next_key.fetch_add(1, Ordering::Relaxed), b"fresh");
            let store = flight_store.clone();
            let payload = payload.clone();
            async move {
                let mut tasks = Vec::with_capacity(CALLERS);
                for _ in 0..CALLERS {
                    let store = store.clone();
                    let payload = payload.clone();
                    tasks.push(tokio::spawn(async move {
                        store
                            .get_or_compute(k, move || async move { Ok::<_, String>(payload) })
                            .await
                            .expect("computed")
                    }));
                }
                for task in tasks {
                    task.await.expect("caller task");
                }
            }
        })
    });
    group.finish();
    let stats = flight_store.stats();
    eprintln!(
        "fresh_key_single_flight: {} computations for {} lookups ({} coalesced, {} memory hits)",
        stats.computations_started,
        stats.misses + stats.coalesced + stats.hits_memory,
        stats.coalesced,
        stats.hits_memory,
    );
}

/// Records in the open benchmark: 4 GiB of 320 KiB values.
const OPEN_RECORDS: u64 = 13_000;

fn open_many_records(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many");
    // The open's work grows with the number of records, not their size:
    // 1 KiB values stand in for the WAVs.
    let store = open(&rt, &path, 0, 64 * MIB);
    rt.block_on(async {
        for n in 0..OPEN_RECORDS {
            store.insert(key(n, b"many"), value(KIB, n as u8)).await;
        }
        store.close().await.expect("close");
    });
    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    group.bench_function("13000_records", |b| {
        b.iter(|| {
            let store = open(&rt, &path, 0, 64 * MIB);
            assert_eq!(store.stats().disk.entries, OPEN_RECORDS);
            rt.block_on(store.close()).expect("close");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hit_latency, concurrent_throughput, open_many_records
}
criterion_main!(benches);
